"""Figure: pass@1 with 95% bootstrap intervals (over problems) for every method of the main CPU
comparison (`common.MAIN`: 72 problems), under lenient and strict grading (two panels), and the
tokens each method sampled per output; the last bar of each panel is the compute-matched
baseline, low-temperature majority@N with N = round(power's tokens / low temperature's) (exact
mean over N-subsets of the stored samples, `per_problem.Store`, as compute_matched.py).  Also
prints paired bootstrap intervals of pass@1 differences (per-problem differences, problems
resampled together), and each method's wall time: the sum of its records' `wall_time_s` (generation time, a batched call's time split
over the outputs it returned), over all problems and over the problems beyond main.jsonl's 24
(the part that the 72-problem run generated).

    python paper_figures/cpu_accuracy.py [--results DIR] [--out DIR]     -> cpu_accuracy.png
"""

from __future__ import annotations

import numpy as np

from common import COLORS, LABELS, MAIN, arguments, methods_present, records, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval, pass_at_k_by_problem, pass_at_k_interval
from mcmc_llm.evaluation.grading import GRADINGS
from per_problem import Point, Store
from mcmc_llm.scripts import script_main

PAIRS = [("power_uniform", "low_temp"), ("power_uniform", "base"), ("power_uniform", "power_within_block"),
         ("power_uniform", "best_of_n"), ("power_uniform", "greedy"), ("power_within_block", "low_temp")]


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    recs = records(args.results, MAIN)
    methods = methods_present(recs, LABELS)
    first = {str(r["task_id"]) for r in records(args.results, "main")} if (args.results / "main.jsonl").exists() else set()
    print(f"{'method':<22} {'pass@1':>7} {'95% CI':>15} {'samples':>8} {'tokens sampled/output':>22} {'mean length':>11} "
          f"{'wall min':>9} {'wall min, new problems':>23}")
    walls = [0.0, 0.0, 0]  # all, beyond main.jsonl, records beyond main.jsonl
    stats = []
    for method in methods:
        interval = pass_at_k_interval(recs, method, 1)
        mine = [r for r in recs if r["method"] == method]
        tokens = np.mean([r["compute"]["tokens_sampled"] for r in mine])
        length = np.mean([r["length"] for r in mine])
        stats.append((method, interval, tokens))
        new = [r for r in mine if str(r["task_id"]) not in first]
        wall, wall_new = sum(r["wall_time_s"] for r in mine) / 60, sum(r["wall_time_s"] for r in new) / 60
        walls = [walls[0] + wall, walls[1] + wall_new, walls[2] + len(new)]
        print(f"{method:<22} {interval.mean:>7.3f} [{interval.low:.3f}, {interval.high:.3f}] {len(mine):>8} {tokens:>22.0f} {length:>11.1f} "
              f"{wall:>9.1f} {wall_new:>23.1f}")
    print(f"wall time, all methods: {walls[0]:.1f} min; on the problems beyond main.jsonl's {len(first)}: {walls[1]:.1f} min "
          f"({walls[2]} records)")
    print("paired differences (same problems resampled together; exploratory: the tested family with Holm p is paired_tests.py):")
    for a, b in PAIRS:
        if a in methods and b in methods:
            difference = bootstrap_interval(pass_at_k_by_problem(recs, a, 1) - pass_at_k_by_problem(recs, b, 1))
            print(f"  {a} - {b}: {difference.mean:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]")
    store = Store(args.results)
    power, low = Point(MAIN, "power_uniform"), Point(MAIN, "low_temp")
    matched = store.matched(power, low) if store.has(power) and store.has(low) else None
    bars = [(method, Point(MAIN, method), LABELS[method].replace(" (", "\n(").replace(", ", ",\n"), COLORS[method])
            for method in methods]
    if matched is not None:
        bars.append(("matched", Point(MAIN, "low_temp", "majority", matched),
                     f"low temperature,\nmajority@{matched}\n(power's tokens)", "tab:cyan"))
    figure, axes = plt.subplots(1, len(GRADINGS), figsize=(15, 4.2), sharey=True)
    for axis, grading in zip(axes, GRADINGS):
        print(f"{grading}:", end="")
        for i, (method, point, label, colour) in enumerate(bars):
            interval = bootstrap_interval(store.values(point, grading))
            tokens = store.tokens(point)
            print(f" {method} {interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}];", end="")
            axis.bar(i, interval.mean, color=colour, hatch="//" if method == "matched" else None)
            axis.errorbar(i, interval.mean, yerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
                          color="black", capsize=4)
            axis.text(i, interval.high + 0.01, f"{tokens:.0f} tok", ha="center", fontsize=7)
        print()
        axis.set_xticks(np.arange(len(bars)), [label for _, _, label, _ in bars], fontsize=6)
        axis.set_title(f"{grading} grading", fontsize=9)
    axes[0].set_ylabel("pass@1 (95% bootstrap CI over problems)")
    problems = stats[0][1].problems if stats else 0
    figure.suptitle(f"Arithmetic (difficulty 1), SmolLM2-135M-Instruct, {problems} problems, T = 96; label: tokens sampled "
                    "per output (per problem for the matched bar)", fontsize=9)
    save(figure, args.out, "cpu_accuracy.png")


if __name__ == "__main__":
    script_main(main)
