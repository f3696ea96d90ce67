"""Figure: how much of each method's accuracy on the CPU task comes from the grader's "last number"
fallback.  Every stored completion is regraded (`mcmc_llm.evaluation.grading`): lenient = the
task's grader (boxed, else "answer is N", else the last integer), strict = boxed or "answer is N"
only.  Bars: lenient pass@1 split into the part a strict grader also credits and the part only the
fallback credits; label: share of outputs that hit the token cap (96 in the committed runs).

Prints, for every method of the main comparison (`common.MAIN`, 72 problems), of the main
comparison restricted to the first 24 problems (the problems of the ablation and sampler runs, for
their tables), and of alpha, nmcmc and samplers (24 problems): problems, outputs, lenient and
strict pass@1 with 95% bootstrap intervals over problems, the share of outputs that hit the cap,
the share of correct (lenient) answers that came from the fallback, the share of outputs that end
with EOS, the share that state an answer a strict grader reads, and the strict accuracy among
those; then strict pass@k for base, low temperature and power sampling on the main comparison
(unbiased estimator from 16 samples per problem).  The figure shows the main comparison (72
problems) and the ablation and sampler runs (24 problems).

    python paper_figures/strict_grading.py [--results DIR] [--out DIR]     -> strict_grading.png
"""

from __future__ import annotations

import numpy as np

from common import MAIN, arguments, save
from mcmc_llm.evaluation.bootstrap import pass_at_k_interval
from mcmc_llm.evaluation.grading import grading_summary
from per_problem import Point, Store
from mcmc_llm.scripts import script_main

MAIN_METHODS = [  # (method, label)
    ("greedy", "greedy"), ("base", "base (tau=1)"), ("low_temp", "low temperature (tau=1/4)"),
    ("power_uniform", "power, uniform cuts"), ("power_within_block", "power, within-block cuts"),
    ("best_of_n", "best-of-5 by log p (tau=1)"),
]
METHODS = [  # (file, method, label, on: only the problems of that run, drawn: in the figure)
    *[(MAIN, method, label, None, True) for method, label in MAIN_METHODS],
    *[(MAIN, method, label, "alpha", False) for method, label in MAIN_METHODS if method != "greedy"],
    ("alpha", "power_alpha1", "power, alpha=1", None, True), ("alpha", "power_alpha2", "power, alpha=2", None, True),
    ("alpha", "power_alpha8", "power, alpha=8", None, True),
    ("nmcmc", "power_n0", "power, N_MCMC=0", None, True), ("nmcmc", "power_n1", "power, N_MCMC=1", None, True),
    ("nmcmc", "power_n2", "power, N_MCMC=2", None, True), ("nmcmc", "power_n10", "power, N_MCMC=10", None, True),
    ("samplers", "power_entropy", "MH, entropy cuts", None, True), ("samplers", "smc", "Power-SMC (5 particles)", None, True),
    ("samplers", "rollout", "rollout sampler", None, True),
]
PASS_AT_K = ("base", "low_temp", "power_uniform")


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    store = Store(args.results)
    print(f"{'file':<9} {'method':<20} {'problems':>8} {'outputs':>7}  {'lenient [95% CI]':<22} {'strict [95% CI]':<22} {'hit cap':>7} "
          f"{'fallback/correct':>16} {'EOS':>5} {'stated':>6} {'strict/stated':>13}")
    shown, headed = [], set()
    for file, method, label, on, drawn in METHODS:
        mine = store.raw(file, on)
        if not any(r["method"] == method for r in mine):
            continue
        if on is not None and (file, on) not in headed:
            headed.add((file, on))
            print(f"-- {file} on the {len({r['task_id'] for r in store.raw(on)})} problems of {on}.jsonl "
                  "(the problems of the ablation and sampler runs):")
        summary = grading_summary(mine, method)
        cells = []
        for grading in ("lenient", "strict"):
            i = pass_at_k_interval(store.graded(file, grading, on), method, 1)
            cells.append(f"{i.mean:.3f} [{i.low:.3f}, {i.high:.3f}]")
        given = summary["strict"] / summary["stated"] if summary["stated"] else float("nan")
        problems = len({r["task_id"] for r in mine if r["method"] == method})
        print(f"{file:<9} {method:<20} {problems:>8} {summary['outputs']:>7}  {cells[0]:<22} {cells[1]:<22} {summary['cap']:>7.0%} "
              f"{summary['fallback']:>16.0%} {1 - summary['cap']:>5.0%} {summary['stated']:>6.0%} {given:>13.0%}")
        if drawn:
            shown.append((f"{label} ({problems})", summary))
    print(f"\nstrict pass@k (lenient in brackets), {MAIN}")
    for method in PASS_AT_K:
        if not any(r["method"] == method for r in store.raw(MAIN)):
            continue
        cells = []
        largest = store.samples(Point(MAIN, method))
        for k in (k for k in (1, 2, 4, 8, 16) if k <= largest):
            strict = pass_at_k_interval(store.graded(MAIN, "strict"), method, k).mean
            lenient = pass_at_k_interval(store.graded(MAIN, "lenient"), method, k).mean
            cells.append(f"pass@{k}={strict:.3f} ({lenient:.3f})")
        print(f"  {method:<16} " + " ".join(cells))

    figure, axis = plt.subplots(figsize=(8, 6))
    y = np.arange(len(shown))[::-1]
    strict = np.array([s["strict"] for _, s in shown])
    fallback = np.array([s["lenient"] - s["strict"] for _, s in shown])
    axis.barh(y, strict, color="tab:blue", label="credited by a strict grader (boxed / answer is)")
    axis.barh(y, fallback, left=strict, color="tab:orange", label="credited only by the last-integer fallback")
    for yi, (_, s) in zip(y, shown):
        axis.text(s["lenient"] + 0.005, yi, f"{s['cap']:.0%} hit the cap", va="center", fontsize=7)
    axis.set_yticks(y, [label for label, _ in shown], fontsize=8)
    axis.set_xlim(0, max(s["lenient"] for _, s in shown) + 0.15)
    axis.set_xlabel("pass@1 (lenient = whole bar)")
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, frameon=False)
    axis.set_title("CPU task: accuracy by the grading rule that credited it (in brackets: problems)", fontsize=9)
    save(figure, args.out, "strict_grading.png")


if __name__ == "__main__":
    script_main(main)
