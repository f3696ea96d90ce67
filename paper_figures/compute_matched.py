"""Figure: accuracy against tokens on the CPU task, with compute-matched baselines built from the
stored samples (no new generation), under lenient and strict grading (two columns).

Top row: the main comparison (`common.MAIN`, 72 problems).  Curves, N = 1 .. the samples stored
per problem (16 for low temperature and power with uniform cuts, 8 for within-block cuts): majority
vote over N low-temperature samples, best-of-N by log p over N low-temperature samples, and
majority vote over N power chains (uniform and within-block cuts); each value is the exact mean
over every N-subset of a problem's samples (`mcmc_llm.evaluation.selection`).  Points: greedy,
base, best-of-5 by log p at tau = 1 (the main run's `best_of_n`).

Bottom row: the first 24 problems, the only ones the sampler and N_MCMC runs have: the same curves
on those problems (the main comparison restricted to them), Power-SMC, MH with entropy cuts, the
rollout sampler, and power@1 as N_MCMC varies (0, 1, 2, 4, 10; the ablation run has 4 samples per
problem, N_MCMC = 4 is the main run's).  x: mean tokens sampled per problem (N outputs of the
method), log scale; bars and bands: 95% percentile bootstrap over problems.

Also prints every point, and for every power-type point the low-temperature majority@M and
best-of-M on the same problems whose token cost is nearest (M = round(tokens / low-temperature
tokens per output), M <= 16) with the paired differences (exploratory: the tested family is in
paired_tests.py).

    python paper_figures/compute_matched.py [--results DIR] [--out DIR]   -> compute_matched.png
"""

from __future__ import annotations

from common import MAIN, arguments, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval
from mcmc_llm.evaluation.grading import GRADINGS
from per_problem import Point, Store
from mcmc_llm.scripts import script_main

NAMES = {
    "low_temp": "low temperature", "power_uniform": "power (uniform cuts)", "power_within_block": "power (within-block cuts)",
    "greedy": "greedy", "base": "base (tau=1)", "best_of_n": "best-of-5 by log p at tau=1", "smc": "Power-SMC (5 particles)",
    "power_entropy": "MH, entropy cuts", "rollout": "rollout sampler", "power_n0": "power, N_MCMC=0",
    "power_n1": "power, N_MCMC=1", "power_n2": "power, N_MCMC=2", "power_n10": "power, N_MCMC=10",
}
SHORT = "samplers"  # the run whose problems (the first 24) the bottom row is on; alpha and nmcmc have the same
CURVES = [  # (method, rule, colour, linestyle, label), all of the main comparison
    ("low_temp", "majority", "tab:blue", "-", "low temperature, majority@N"),
    ("low_temp", "best_log_p", "tab:cyan", "--", "low temperature, best-of-N by log p"),
    ("power_uniform", "majority", "tab:red", "-", "power (uniform cuts), majority@N"),
    ("power_within_block", "majority", "tab:orange", "-", "power (within-block cuts), majority@N"),
]
POINTS = {  # row -> [(file, method, colour, marker)]
    None: [(MAIN, "greedy", "0.4", "s"), (MAIN, "base", "tab:gray", "o"), (MAIN, "best_of_n", "tab:green", "D")],
    SHORT: [("samplers", "smc", "tab:purple", "^"), ("samplers", "power_entropy", "tab:brown", "v"),
            ("samplers", "rollout", "tab:pink", "P")],
}
NMCMC = [("nmcmc", "power_n0"), ("nmcmc", "power_n1"), ("nmcmc", "power_n2"), (MAIN, "power_uniform"), ("nmcmc", "power_n10")]
POWER_POINTS = {  # row -> power-type points compared with low temperature at matched tokens
    None: [Point(MAIN, "power_uniform"), Point(MAIN, "power_uniform", "majority", 2), Point(MAIN, "power_uniform", "majority", 3),
           Point(MAIN, "power_within_block")],
    SHORT: [Point(MAIN, "power_uniform", on=SHORT)] + [Point(f, m) for f, m in NMCMC if f == "nmcmc"]
           + [Point("samplers", "smc"), Point("samplers", "power_entropy")],
}


def interval(store: Store, point: Point, grading: str):
    return bootstrap_interval(store.values(point, grading))


def draw(axis, store: Store, on: str | None, grading: str) -> None:
    """One panel: the curves and points of a row (`on`: None, all problems, or SHORT's problems)."""
    for method, rule, colour, style, label in CURVES:
        base = Point(MAIN, method, rule, on=on)
        if not store.has(base):
            continue
        points = [Point(MAIN, method, rule, n, on) for n in range(1, store.samples(base) + 1)]
        found = [interval(store, p, grading) for p in points]
        tokens = [store.tokens(p) for p in points]
        axis.plot(tokens, [i.mean for i in found], style, marker=".", color=colour, label=f"{label} (N = 1..{len(points)})")
        axis.fill_between(tokens, [i.low for i in found], [i.high for i in found], color=colour, alpha=0.10, linewidth=0)
    if on is not None:
        chain = [Point(file, method).restricted(on) for file, method in NMCMC]
        chain = [p for p in chain if store.has(p)]
        if chain:
            found = [interval(store, p, grading) for p in chain]
            tokens = [store.tokens(p) for p in chain]
            means = [i.mean for i in found]
            axis.errorbar(tokens, means, yerr=[[m - i.low for m, i in zip(means, found)], [i.high - m for m, i in zip(means, found)]],
                          fmt=":", marker="x", color="darkred", capsize=3, label="power@1, N_MCMC = 0, 1, 2, 4, 10")
    for file, method, colour, marker in POINTS[on]:
        point = Point(file, method).restricted(on)
        if not store.has(point):
            continue
        i = interval(store, point, grading)
        axis.errorbar([store.tokens(point)], [i.mean], yerr=[[i.mean - i.low], [i.high - i.mean]], fmt=marker, color=colour,
                      capsize=3, label=NAMES[method])
    power = Point(MAIN, "power_uniform", on=on)
    if store.has(power):
        axis.axvline(store.tokens(power), color="0.6", linestyle="--", linewidth=0.8)
    axis.set_xscale("log")
    axis.grid(alpha=0.3, which="both")


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    store = Store(args.results)
    low = Point(MAIN, "low_temp")
    if not store.has(low):
        raise SystemExit(f"compute_matched.py needs the main run's ({MAIN}.jsonl) low_temp records")
    rows = [None] + ([SHORT] if store.raw(SHORT) else [])
    figure, axes = plt.subplots(len(rows), 2, figsize=(13, 5 * len(rows)), sharey=True, squeeze=False)
    for r, on in enumerate(rows):
        count = len(store.tasks(low.restricted(on)))
        for c, grading in enumerate(GRADINGS):
            axis = axes[r][c]
            draw(axis, store, on, grading)
            where = f"main comparison, {count} problems" if on is None else f"first {count} problems (the sampler and N_MCMC runs)"
            axis.set_title(f"{where}\n{grading} grading"
                           + (" (boxed, answer is, else last integer)" if grading == "lenient" else " (boxed or answer is only)"), fontsize=9)
            axis.set_xlabel("tokens sampled per problem (mean); dashed: power@1's budget")
        axes[r][0].set_ylabel("accuracy (95% bootstrap CI over problems)")
        axes[r][1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.suptitle("Accuracy against tokens on the CPU task: selection over stored samples against power sampling", fontsize=10)

    for on in rows:
        low_here = low.restricted(on)
        every = [Point(MAIN, m, r, n, on) for m, r, _, _, _ in CURVES if store.has(Point(MAIN, m, on=on))
                 for n in range(1, store.samples(Point(MAIN, m, on=on)) + 1)]
        every += [Point(f, m).restricted(on) for f, m, _, _ in POINTS[on] if store.has(Point(f, m).restricted(on))]
        if on is not None:
            every += [Point(f, m) for f, m in NMCMC if f == "nmcmc" and store.has(Point(f, m))]
        print(f"\n== {'all problems of ' + MAIN if on is None else 'the problems of ' + on + '.jsonl'}: "
              f"{len(store.tasks(low_here))} problems")
        print(f"{'point':<52} {'tok sampled':>11} {'tok encoded':>11}   {'lenient [95% CI]':<24} {'strict [95% CI]':<24}")
        for point in every:
            cells = "   ".join(f"{i.mean:.3f} [{i.low:.3f}, {i.high:.3f}]  " for i in (interval(store, point, g) for g in GRADINGS))
            print(f"{point.label(NAMES):<52} {store.tokens(point):>11.0f} {store.tokens(point, 'tokens_encoded'):>11.0f}   {cells}")
        print(f"\nat matched tokens: power-type output against M low-temperature samples on the same problems, M = round(tokens / "
              f"{store.tokens(low_here):.1f}); paired differences (exploratory), lenient | strict")
        for point in POWER_POINTS[on]:
            if not store.has(point) or point.n > store.samples(point):
                continue
            m = store.matched(point, low_here)
            if m is None:
                continue
            for rule in ("majority", "best_log_p"):
                other = Point(MAIN, "low_temp", rule, m, on)
                cells = []
                for grading in GRADINGS:
                    d = bootstrap_interval(store.difference(point, other, grading))
                    cells.append(f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]")
                print(f"  {point.label(NAMES)} ({store.tokens(point):.0f} tok) - {other.label(NAMES)} ({store.tokens(other):.0f} tok): "
                      + " | ".join(cells))
    save(figure, args.out, "compute_matched.png")


if __name__ == "__main__":
    script_main(main)
