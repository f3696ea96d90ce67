"""Figure and table: the family of paired comparisons of accuracy reported in docs/results.md for
the CPU task, under lenient and strict grading, with raw and Holm-adjusted p-values.

Every comparison is a difference of per-problem accuracies d_i = a_i - b_i over the same problems
(pass@1 = mean over a problem's outputs; majority@N / best-of-N = exact means over subsets of the
stored samples, `mcmc_llm.evaluation.selection`).  The main comparison (`common.MAIN`) has 72
problems; the sampler run has the first 24 only, so its comparisons pair it with the main
comparison restricted to those 24 problems.  The compute-matched baselines are low-temperature
majority@M and best-of-M with M = round(tokens of a / tokens of one low-temperature sample), the
budget nearest a's (`per_problem.Store.matched`, as compute_matched.py).  For each: the mean difference and its 95%
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

from common import MAIN, arguments, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval, bootstrap_p_value, sign_flip_p_value
from mcmc_llm.evaluation.grading import GRADINGS
from mcmc_llm.evaluation.multiplicity import holm_adjust
from per_problem import Point, Store
from mcmc_llm.scripts import script_main

NAMES = {
    "low_temp": "low temp", "power_uniform": "power", "power_within_block": "power (within-block)", "greedy": "greedy",
    "base": "base", "best_of_n": "best-of-5 (tau=1)", "smc": "Power-SMC", "power_entropy": "MH entropy cuts",
    "rollout": "rollout",
}
SHORT = "samplers"  # the sampler run: the first 24 problems only
POWER, LOW = Point(MAIN, "power_uniform"), Point(MAIN, "low_temp")


def matched(rule: str, on: str | None = None) -> tuple[str, str | None]:
    """The low-temperature `rule` (majority, best_log_p) over as many samples as a's tokens buy."""
    return (rule, on)


FAMILY = [  # (docs section, a, b): a - b; b = matched(...): low temperature at a's token budget
    ("1", POWER, LOW), ("1", POWER, Point(MAIN, "base")), ("1", POWER, Point(MAIN, "power_within_block")),
    ("1", POWER, Point(MAIN, "best_of_n")), ("1", POWER, Point(MAIN, "greedy")),
    ("1", Point(MAIN, "power_within_block"), LOW), ("1", Point(MAIN, "best_of_n"), LOW),
    ("8", Point(SHORT, "power_entropy"), LOW.restricted(SHORT)), ("8", Point(SHORT, "smc"), LOW.restricted(SHORT)),
    ("8", Point(SHORT, "rollout"), LOW.restricted(SHORT)),
    ("10", POWER, matched("majority")), ("10", POWER, matched("best_log_p")),
    ("10", Point(MAIN, "power_uniform", "majority", 2), matched("majority")),
    ("10", Point(MAIN, "power_uniform", "majority", 3), matched("majority")),
    ("10", Point(SHORT, "smc"), matched("majority", SHORT)),
]
FLIPS = 200_000
BOOTSTRAP = 20_000


def resolve(store: Store, a: Point, b) -> Point | None:
    """b itself, or the matched low-temperature point on a's problems (None if it is not stored)."""
    if isinstance(b, Point):
        return b
    rule, on = b
    low = LOW.restricted(on)
    if not (store.has(a) and store.has(low)):
        return None
    m = store.matched(a, low)
    return None if m is None else Point(MAIN, "low_temp", rule, m, on)


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    store = Store(args.results)
    tests = []  # (section, label, grading, interval, sign-flip p, bootstrap p)
    for grading in GRADINGS:
        for section, a, b in FAMILY:
            b = resolve(store, a, b)
            if b is None or not (store.has(a) and store.has(b)) or a.n > store.samples(a) or b.n > store.samples(b):
                continue  # e.g. the --quick smoke results: 2 samples per problem
            d = store.difference(a, b, grading)
            label = f"{a.label(NAMES)} - {b.label(NAMES)}"
            if a.rule != "pass1" or b.rule != "pass1":
                label += f" ({store.tokens(a):.0f} vs {store.tokens(b):.0f} tok)"
            tests.append((section, label, grading, bootstrap_interval(d), sign_flip_p_value(d, num_resamples=FLIPS), bootstrap_p_value(d, num_resamples=BOOTSTRAP)))
    adjusted = holm_adjust([t[4] for t in tests])
    print(f"family: {len(tests)} paired comparisons ({len(tests) // len(GRADINGS)} per grading); Holm over all of them")
    if not tests:
        return
    print(f"{'section':<8} {'comparison':<72} {'problems':>8} {'grading':<8} {'difference [95% CI]':<26} {'p (sign-flip)':>13} "
          f"{'p (bootstrap)':>13} {'p (Holm)':>9}")
    for (section, label, grading, d, p, pb), h in zip(tests, adjusted):
        mark = " *" if h < 0.05 else ""
        shown = f"{pb:.2g}" if pb > 0 else f"<{1 / BOOTSTRAP:.0e}"  # no resampled mean on the other side of 0
        print(f"{section:<8} {label:<72} {d.problems:>8} {grading:<8} {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]     {p:>13.2g} "
              f"{shown:>13} {h:>9.2g}{mark}")
    print("* Holm-adjusted p < 0.05 (family-wise error rate 5%)")
    figure, axes = plt.subplots(1, 2, figsize=(15, 6.5), sharey=True)
    for axis, grading in zip(axes, GRADINGS):
        mine = [(t, h) for t, h in zip(tests, adjusted) if t[2] == grading]
        y = np.arange(len(mine))[::-1]
        for yi, ((_, _, _, d, _, _), h) in zip(y, mine):
            colour = "tab:red" if h < 0.05 else "0.4"
            axis.errorbar([d.mean], [yi], xerr=[[d.mean - d.low], [d.high - d.mean]], fmt="o", color=colour, capsize=3)
            axis.annotate(f"Holm p={h:.2g}", (d.high, yi), textcoords="offset points", xytext=(4, -3), fontsize=7)
        axis.axvline(0.0, color="black", linewidth=0.8)
        low, high = min(t[3].low for t, _ in mine), max(t[3].high for t, _ in mine)
        axis.set_xlim(low - 0.05 * (high - low), high + 0.35 * (high - low))  # room for the Holm p labels
        axis.set_yticks(y, [f"[{t[0]}] {t[1]}, {t[3].problems} problems" for t, _ in mine], fontsize=7)
        axis.set_xlabel("paired difference in accuracy (95% bootstrap CI)")
        axis.set_title(f"{grading} grading (red: Holm-adjusted p < 0.05 over all {len(tests)})", fontsize=9)
        axis.grid(alpha=0.3, axis="x")
    save(figure, args.out, "paired_tests.png")


if __name__ == "__main__":
    script_main(main)
