"""Figure: task accuracy against tokens spent on the CPU task, for every sampler of p^alpha
(alpha = 4): block-wise MH with uniform, within-block and entropy cuts, Power-SMC, the rollout
sampler, best-of-N by likelihood, and the base and low-temperature baselines.  pass@1 with 95%
bootstrap intervals over problems, against the mean tokens sampled per output (log scale; every
particle and rollout token counted), under lenient and strict grading (two panels), with the
compute-matched baseline as a curve: low-temperature majority@N, N = 1..16, at N times its tokens
per output (exact means over N-subsets, `per_problem.Store`).  Also prints each sampler's strict pass@1
(`mcmc_llm.evaluation.grading`), mean total log p and its paired differences to low temperature
under both gradings (problems resampled together; exploratory: the tested family with Holm p is
paired_tests.py).  The sampler run has the first 24 problems only, so the main
comparison's methods are shown on those same problems (`common.on_problems_of`); their
72-problem numbers are cpu_accuracy.py's.

    python paper_figures/samplers_accuracy.py [--results DIR] [--out DIR]   -> samplers_accuracy.png
"""

from __future__ import annotations

import numpy as np

from common import MAIN, arguments, on_problems_of, records, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval, pass_at_k_by_problem, pass_at_k_interval
from mcmc_llm.evaluation.grading import GRADINGS, regraded
from per_problem import Point, Store
from mcmc_llm.scripts import script_main

POINTS = [  # (file, method, label, colour)
    (MAIN, "base", "base (tau=1)", "tab:gray"),
    (MAIN, "low_temp", "low temperature", "tab:blue"),
    (MAIN, "power_uniform", "MH, uniform cuts", "tab:red"),
    (MAIN, "power_within_block", "MH, within-block cuts", "tab:orange"),
    ("samplers", "power_entropy", "MH, entropy cuts", "tab:brown"),
    ("samplers", "smc", "Power-SMC (5 particles)", "tab:purple"),
    ("samplers", "rollout", "rollout sampler (K=3, M=2, H=4)", "tab:pink"),
    (MAIN, "best_of_n", "best-of-N by log p", "tab:green"),
]


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    samplers = records(args.results, "samplers")
    files = {MAIN: on_problems_of(records(args.results, MAIN), samplers), "samplers": samplers}  # the same problems
    problems = len({r["task_id"] for r in samplers})
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    print(f"on the {problems} problems of samplers.jsonl (the main comparison's methods restricted to them)")
    strict = {name: regraded(recs, "strict") for name, recs in files.items()}
    print(f"{'method':<34} {'pass@1':>7} {'95% CI':>15} {'strict':>7} {'95% CI':>15} {'outputs':>8} {'tokens/output':>14} "
          f"{'mean total log p':>17}   paired - low temperature: lenient | strict")
    for name, method, label, colour in POINTS:
        mine = [r for r in files[name] if r["method"] == method]
        if not mine:
            continue
        interval = pass_at_k_interval(files[name], method, 1)
        tokens = float(np.mean([r["compute"]["tokens_sampled"] for r in mine]))
        for axis, shown in zip(axes, (interval, pass_at_k_interval(strict[name], method, 1))):
            axis.errorbar([tokens], [shown.mean], yerr=[[shown.mean - shown.low], [shown.high - shown.mean]],
                          fmt="o", capsize=4, color=colour, label=label)
        paired = []
        if method != "low_temp" and any(r["method"] == "low_temp" for r in files[MAIN]):
            for graded in (files, strict):
                d = bootstrap_interval(pass_at_k_by_problem(graded[name], method, 1) - pass_at_k_by_problem(graded[MAIN], "low_temp", 1))
                paired.append(f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]")
        total = float(np.mean([r["log_p"] for r in mine]))
        s = pass_at_k_interval(strict[name], method, 1)
        print(f"{label:<34} {interval.mean:>7.3f} [{interval.low:.3f}, {interval.high:.3f}] {s.mean:>7.3f} [{s.low:.3f}, {s.high:.3f}] "
              f"{len(mine):>8} {tokens:>14.0f} {total:>17.1f}   {' | '.join(paired)}")
    store = Store(args.results)
    low = Point(MAIN, "low_temp", on="samplers")
    if store.has(low):
        sizes = range(1, store.samples(low) + 1)
        for axis, grading in zip(axes, GRADINGS):
            curve = [Point(MAIN, "low_temp", "majority", n, on="samplers") for n in sizes]
            axis.plot([store.tokens(point) for point in curve], [store.values(point, grading).mean() for point in curve],
                      color="tab:cyan", linestyle="--", label="low temperature, majority@N (N = 1..16; tokens per problem)")
    for axis, grading in zip(axes, GRADINGS):
        axis.set_xscale("log")
        axis.set_xlabel("tokens sampled per output (mean)")
        axis.set_title(f"{grading} grading", fontsize=9)
    axes[0].set_ylabel("pass@1 (95% bootstrap CI over problems)")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.suptitle(f"Samplers of p^4 on the CPU task ({problems} problems): accuracy against tokens", fontsize=10)
    save(figure, args.out, "samplers_accuracy.png")


if __name__ == "__main__":
    script_main(main)
