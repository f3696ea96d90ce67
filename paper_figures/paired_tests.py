"""Figure and table: the family of paired comparisons of accuracy reported in docs/results.md for
the CPU task, under lenient and strict grading, with raw and Holm-adjusted p-values.

Every comparison is a difference of per-problem accuracies d_i = a_i - b_i over the same problems
(pass@1 = mean over a problem's outputs; majority@N / best-of-N = exact means over subsets of the
stored samples, `mcmc_llm.evaluation.selection`).  For each: the mean difference and its 95%
paired percentile-bootstrap interval (2000 resamples, seed 0, as the other scripts), the
two-sided sign-flip permutation p-value (200000 flips, seed 0: the test, `sign_flip_p_value`), the
two-sided bootstrap p-value matching the interval (`bootstrap_p_value`, 20000 resamples, for
reference), and the Holm-adjusted sign-flip p-value over the whole family (both gradings
together; `mcmc_llm.evaluation.multiplicity.holm_adjust`).  A comparison is called significant only when its
Holm-adjusted p is below 0.05.

    python paper_figures/paired_tests.py [--results DIR] [--out DIR]     -> paired_tests.png
"""

from __future__ import annotations

import numpy as np

from common import arguments, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval, bootstrap_p_value, sign_flip_p_value
from mcmc_llm.evaluation.grading import GRADINGS
from mcmc_llm.evaluation.multiplicity import holm_adjust
from per_problem import Point, Store

NAMES = {
    "low_temp": "low temp", "power_uniform": "power", "power_within_block": "power (within-block)", "greedy": "greedy",
    "base": "base", "best_of_n": "best-of-5 (tau=1)", "smc": "Power-SMC", "power_entropy": "MH entropy cuts",
    "rollout": "rollout",
}
POWER, LOW = Point("main", "power_uniform"), Point("main", "low_temp")
FAMILY = [  # (docs section, a, b): a - b
    ("1", POWER, LOW), ("1", POWER, Point("main", "base")), ("1", POWER, Point("main", "power_within_block")),
    ("1", POWER, Point("main", "best_of_n")), ("1", POWER, Point("main", "greedy")),
    ("8", Point("main", "power_within_block"), LOW), ("8", Point("samplers", "power_entropy"), LOW),
    ("8", Point("samplers", "smc"), LOW), ("8", Point("samplers", "rollout"), LOW), ("8", Point("main", "best_of_n"), LOW),
    ("10", POWER, Point("main", "low_temp", "majority", 5)), ("10", POWER, Point("main", "low_temp", "best_log_p", 5)),
    ("10", Point("samplers", "smc"), Point("main", "low_temp", "majority", 5)),
    ("10", Point("main", "power_uniform", "majority", 2), Point("main", "low_temp", "majority", 10)),
    ("10", Point("main", "power_uniform", "majority", 3), Point("main", "low_temp", "majority", 15)),
]
FLIPS = 200_000
BOOTSTRAP = 20_000


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    store = Store(args.results)
    tests = []  # (section, label, grading, interval, sign-flip p, bootstrap p)
    for grading in GRADINGS:
        for section, a, b in FAMILY:
            if not (store.has(a) and store.has(b)) or a.n > store.samples(a) or b.n > store.samples(b):
                continue  # e.g. the --quick smoke results: 2 samples per problem
            d = store.difference(a, b, grading)
            label = f"{a.label(NAMES)} - {b.label(NAMES)}"
            tests.append((section, label, grading, bootstrap_interval(d), sign_flip_p_value(d, num_resamples=FLIPS), bootstrap_p_value(d, num_resamples=BOOTSTRAP)))
    adjusted = holm_adjust([t[4] for t in tests])
    print(f"family: {len(tests)} paired comparisons ({len(tests) // len(GRADINGS)} per grading); Holm over all of them")
    if not tests:
        return
    print(f"{'section':<8} {'comparison':<52} {'grading':<8} {'difference [95% CI]':<26} {'p (sign-flip)':>13} {'p (bootstrap)':>13} {'p (Holm)':>9}")
    for (section, label, grading, d, p, pb), h in zip(tests, adjusted):
        mark = " *" if h < 0.05 else ""
        shown = f"{pb:.2g}" if pb > 0 else f"<{1 / BOOTSTRAP:.0e}"  # no resampled mean on the other side of 0
        print(f"{section:<8} {label:<52} {grading:<8} {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]     {p:>13.2g} {shown:>13} {h:>9.2g}{mark}")
    print("* Holm-adjusted p < 0.05 (family-wise error rate 5%)")
    figure, axes = plt.subplots(1, 2, figsize=(12, 6), sharey=True)
    for axis, grading in zip(axes, GRADINGS):
        mine = [(t, h) for t, h in zip(tests, adjusted) if t[2] == grading]
        y = np.arange(len(mine))[::-1]
        for yi, ((_, _, _, d, _, _), h) in zip(y, mine):
            colour = "tab:red" if h < 0.05 else "0.4"
            axis.errorbar([d.mean], [yi], xerr=[[d.mean - d.low], [d.high - d.mean]], fmt="o", color=colour, capsize=3)
            axis.annotate(f"Holm p={h:.2g}", (d.high, yi), textcoords="offset points", xytext=(4, -3), fontsize=7)
        axis.axvline(0.0, color="black", linewidth=0.8)
        axis.set_yticks(y, [f"[{t[0]}] {t[1]}" for t, _ in mine], fontsize=7)
        axis.set_xlabel("paired difference in accuracy (95% bootstrap CI over problems)")
        axis.set_title(f"{grading} grading (red: Holm-adjusted p < 0.05 over all {len(tests)})", fontsize=9)
        axis.grid(alpha=0.3, axis="x")
    save(figure, args.out, "paired_tests.png")


if __name__ == "__main__":
    main()
