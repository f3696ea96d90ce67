"""Figure: accuracy against tokens on the CPU task, with compute-matched baselines built from the
stored samples (no new generation), under lenient and strict grading (two panels).

Curves, N = 1 .. the samples stored per problem (16 for low temperature and power with uniform
cuts, 8 for within-block cuts): majority vote over N low-temperature samples, best-of-N by log p
over N low-temperature samples, and majority vote over N power chains; each value is the exact mean
over every N-subset of a problem's samples (`mcmc_llm.evaluation.selection`).  Points: greedy,
base, best-of-5 by log p at tau = 1 (the main run's `best_of_n`), Power-SMC, MH with entropy cuts,
the rollout sampler, and power@1 as N_MCMC varies (0, 1, 2, 4, 10; the ablation run has 4 samples
per problem, N_MCMC = 4 is the main run).  x: mean tokens sampled per problem (N outputs of the
method), log scale; bars and bands: 95% percentile bootstrap over problems.

Also prints, for every power-type point, the low-temperature majority@M and best-of-M whose token
cost is nearest (M = round(tokens / low-temperature tokens per output), M <= 16) and the paired
differences (exploratory: the tested family is in paired_tests.py).

    python paper_figures/compute_matched.py [--results DIR] [--out DIR]   -> compute_matched.png
"""

from __future__ import annotations

from common import arguments, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval
from mcmc_llm.evaluation.grading import GRADINGS
from per_problem import Point, Store

NAMES = {
    "low_temp": "low temperature", "power_uniform": "power (uniform cuts)", "power_within_block": "power (within-block cuts)",
    "greedy": "greedy", "base": "base (tau=1)", "best_of_n": "best-of-5 by log p at tau=1", "smc": "Power-SMC (5 particles)",
    "power_entropy": "MH, entropy cuts", "rollout": "rollout sampler", "power_n0": "power, N_MCMC=0",
    "power_n1": "power, N_MCMC=1", "power_n2": "power, N_MCMC=2", "power_n10": "power, N_MCMC=10",
}
CURVES = [  # (file, method, rule, colour, linestyle, label)
    ("main", "low_temp", "majority", "tab:blue", "-", "low temperature, majority@N"),
    ("main", "low_temp", "best_log_p", "tab:cyan", "--", "low temperature, best-of-N by log p"),
    ("main", "power_uniform", "majority", "tab:red", "-", "power (uniform cuts), majority@N"),
    ("main", "power_within_block", "majority", "tab:orange", "-", "power (within-block cuts), majority@N"),
]
POINTS = [  # (file, method, colour, marker)
    ("main", "greedy", "0.4", "s"), ("main", "base", "tab:gray", "o"), ("main", "best_of_n", "tab:green", "D"),
    ("samplers", "smc", "tab:purple", "^"), ("samplers", "power_entropy", "tab:brown", "v"), ("samplers", "rollout", "tab:pink", "P"),
]
NMCMC = [("nmcmc", "power_n0"), ("nmcmc", "power_n1"), ("nmcmc", "power_n2"), ("main", "power_uniform"), ("nmcmc", "power_n10")]
LOW = Point("main", "low_temp")


def interval(store: Store, point: Point, grading: str):
    return bootstrap_interval(store.values(point, grading))


def matched(store: Store, point: Point) -> int | None:
    """The N of low-temperature samples whose tokens are nearest the point's (None if not stored)."""
    n = round(store.tokens(point) / store.tokens(LOW))
    return n if 1 <= n <= store.samples(LOW) else None


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    store = Store(args.results)
    if not store.has(LOW):
        raise SystemExit("compute_matched.py needs the main run's low_temp records")
    figure, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    rows = []  # (label, tokens sampled, tokens encoded, {grading: interval})
    for axis, grading in zip(axes, GRADINGS):
        for file, method, rule, colour, style, label in CURVES:
            point = Point(file, method, rule)
            if not store.has(point):
                continue
            ns = range(1, store.samples(point) + 1)
            points = [Point(file, method, rule, n) for n in ns]
            found = [interval(store, p, grading) for p in points]
            tokens = [store.tokens(p) for p in points]
            axis.plot(tokens, [i.mean for i in found], style, marker=".", color=colour, label=f"{label} (N = 1..{len(points)})")
            axis.fill_between(tokens, [i.low for i in found], [i.high for i in found], color=colour, alpha=0.10, linewidth=0)
        chain = [Point(file, method) for file, method in NMCMC if store.has(Point(file, method))]
        if chain:
            found = [interval(store, p, grading) for p in chain]
            tokens = [store.tokens(p) for p in chain]
            means = [i.mean for i in found]
            axis.errorbar(tokens, means, yerr=[[m - i.low for m, i in zip(means, found)], [i.high - m for m, i in zip(means, found)]],
                          fmt=":", marker="x", color="darkred", capsize=3, label="power@1, N_MCMC = 0, 1, 2, 4, 10")
        for file, method, colour, marker in POINTS:
            point = Point(file, method)
            if not store.has(point):
                continue
            i = interval(store, point, grading)
            axis.errorbar([store.tokens(point)], [i.mean], yerr=[[i.mean - i.low], [i.high - i.mean]], fmt=marker, color=colour,
                          capsize=3, label=NAMES[method])
        axis.axvline(store.tokens(Point("main", "power_uniform")), color="0.6", linestyle="--", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("tokens sampled per problem (mean); dashed: power@1's budget")
        axis.set_title(f"{grading} grading" + (" (boxed, answer is, else last integer)" if grading == "lenient" else " (boxed or answer is only)"),
                       fontsize=9)
        axis.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("accuracy (95% bootstrap CI over problems)")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.suptitle(f"Accuracy against tokens on the CPU task ({len(store.tasks(LOW))} problems): "
                    "selection over stored samples against power sampling", fontsize=10)

    every = [Point(f, m, r, n) for f, m, r, _, _, _ in CURVES if store.has(Point(f, m)) for n in range(1, store.samples(Point(f, m)) + 1)]
    every += [Point(f, m) for f, m, _, _ in POINTS if store.has(Point(f, m))]
    every += [Point(f, m) for f, m in NMCMC if f == "nmcmc" and store.has(Point(f, m))]
    print(f"{'point':<52} {'tok sampled':>11} {'tok encoded':>11}   {'lenient [95% CI]':<24} {'strict [95% CI]':<24}")
    for point in every:
        cells = "   ".join(f"{i.mean:.3f} [{i.low:.3f}, {i.high:.3f}]  " for i in (interval(store, point, g) for g in GRADINGS))
        print(f"{point.label(NAMES):<52} {store.tokens(point):>11.0f} {store.tokens(point, 'tokens_encoded'):>11.0f}   {cells}")
    print(f"\nat matched tokens: power-type output against M low-temperature samples, M = round(tokens / "
          f"{store.tokens(LOW):.1f}); paired differences (exploratory), lenient | strict")
    power_points = [Point("main", "power_uniform")] + [Point("main", "power_uniform", "majority", n) for n in (2, 3)] + [Point("main", "power_within_block")]
    power_points += [Point(f, m) for f, m in NMCMC if f == "nmcmc"] + [Point("samplers", "smc"), Point("samplers", "power_entropy")]
    for point in power_points:
        if not store.has(point) or point.n > store.samples(point):
            continue
        m = matched(store, point)
        if m is None:
            continue
        for rule in ("majority", "best_log_p"):
            other = Point("main", "low_temp", rule, m)
            cells = []
            for grading in GRADINGS:
                d = bootstrap_interval(store.difference(point, other, grading))
                cells.append(f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]")
            print(f"  {point.label(NAMES)} ({store.tokens(point):.0f} tok) - {other.label(NAMES)} ({store.tokens(other):.0f} tok): "
                  + " | ".join(cells))
    save(figure, args.out, "compute_matched.png")


if __name__ == "__main__":
    main()
