"""Figure: the main comparison at two length caps, T = 96 (`common.MAIN`, restricted to its first
24 problems) and T = 192 (`cap192.jsonl`, experiments/configs/cpu/cap192.toml: the same problems,
alpha 4, B = 32, N_MCMC = 4; power draws 8 samples per problem there, 16 at T = 96).

At T = 96 most outputs are cut by the cap, and lenient grading then credits whatever integer the
cap left last.  Doubling the cap shows how much of each accuracy, and of each gap, is an artefact
of where the cap cuts.  Prints, per method and cap: lenient and strict pass@1 with 95% bootstrap
intervals over problems, the share of outputs that hit the cap, the share of correct (lenient)
answers from the fallback, tokens sampled per output; then the paired differences (power minus low
temperature at each cap, and each method at T = 192 minus itself at T = 96), lenient and strict,
with sign-flip p-values Holm-adjusted over that family.  Power spends about 5x (T = 96) and 10x
(T = 192) the tokens of one low-temperature sample, so the family also sets power against
low-temperature majority vote and best-of-N by log p over N of the stored low-temperature samples
at power's token budget (N = round(power's tokens / low temperature's), exact means over subsets,
`per_problem.Store.matched`).

    python paper_figures/two_caps.py [--results DIR] [--out DIR]     -> two_caps.png
"""

from __future__ import annotations

import numpy as np

from common import COLORS, LABELS, MAIN, arguments, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval, pass_at_k_interval, sign_flip_p_value
from mcmc_llm.evaluation.grading import GRADINGS, grading_summary
from mcmc_llm.evaluation.multiplicity import holm_adjust
from primary import arm_profile
from per_problem import Point, Store
from mcmc_llm.scripts import script_main

SECOND = "cap192"
CAPS = {MAIN: 96, SECOND: 192}
METHODS = ("greedy", "low_temp", "power_uniform")


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    store = Store(args.results)
    if not store.raw(SECOND):
        raise SystemExit(f"{args.results / (SECOND + '.jsonl')} not found: run `mcmc-llm run experiments/configs/cpu/{SECOND}.toml`")
    points = {(file, method): Point(file, method, on=None if file == SECOND else SECOND) for file in CAPS for method in METHODS}
    problems = len(store.tasks(points[(SECOND, "power_uniform")]))
    print(f"{problems} problems (the first {problems} of the main comparison), alpha 4, B = 32, N_MCMC = 4")
    print(f"{'T':>4} {'method':<15} {'outputs':>7}  {'lenient [95% CI]':<22} {'strict [95% CI]':<22} {'hit cap':>7} "
          f"{'fallback/correct':>16} {'tokens/output':>13}")
    accuracy = {}
    for (file, method), point in points.items():
        mine = store.raw(file, point.on)
        summary = grading_summary(mine, method)
        cells = []
        for grading in GRADINGS:
            interval = pass_at_k_interval(store.graded(file, grading, point.on), method, 1)
            accuracy[(file, method, grading)] = interval
            cells.append(f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]")
        tokens = np.mean([r["compute"]["tokens_sampled"] for r in mine if r["method"] == method])
        print(f"{CAPS[file]:>4} {method:<15} {summary['outputs']:>7}  {cells[0]:<22} {cells[1]:<22} {summary['cap']:>7.0%} "
              f"{summary['fallback']:>16.0%} {tokens:>13.0f}")
    print(f"\noutput lengths (tokens) and strict accuracy among outputs that end with EOS:")
    for (file, method), point in points.items():
        profile = arm_profile(store.raw(file, point.on), method)
        print(f"{CAPS[file]:>4} {method:<15} mean length {profile['length']:6.1f}, finished {profile['length_finished']:6.1f}; "
              f"strict among finished {profile['strict_finished']:.3f}")

    family = []  # (label, grading, interval, p)
    comparisons = [(f"power - low temperature, T={CAPS[f]}", points[(f, "power_uniform")], points[(f, "low_temp")]) for f in CAPS]
    print()
    for file in CAPS:
        power, low = points[(file, "power_uniform")], points[(file, "low_temp")]
        n = store.matched(power, low)
        if n is None:  # e.g. the smoke-test results: too few stored samples to match power's tokens
            print(f"T={CAPS[file]}: too few low-temperature samples stored to match power's {store.tokens(power):.0f} tokens")
            continue
        for rule in ("majority", "best_log_p"):
            matched = Point(file, "low_temp", rule, n, on=low.on)
            cells = [f"{store.values(matched, grading).mean():.3f}" for grading in GRADINGS]
            print(f"T={CAPS[file]}: low temperature {rule} over {n} samples ({store.tokens(matched):.0f} tokens against power's "
                  f"{store.tokens(power):.0f}): lenient {cells[0]}, strict {cells[1]}")
            comparisons.append((f"power - low temp. {rule}@{n}, T={CAPS[file]}", power, matched))
            if rule == "majority":
                accuracy[(file, "majority_n")] = n
                for grading in GRADINGS:
                    accuracy[(file, "majority", grading)] = bootstrap_interval(store.values(matched, grading))
    comparisons += [(f"{m} T=192 - T=96", points[(SECOND, m)], points[(MAIN, m)]) for m in METHODS]
    for label, a, b in comparisons:
        for grading in GRADINGS:
            differences = store.difference(a, b, grading)
            family.append((label, grading, bootstrap_interval(differences), sign_flip_p_value(differences)))
    adjusted = holm_adjust([p for *_, p in family])
    print(f"\npaired differences over the {problems} problems (95% bootstrap interval; sign-flip p, Holm over {len(family)} tests)")
    for (label, grading, interval, p), holm in zip(family, adjusted):
        print(f"  {label:<42} {grading:<8} {interval.mean:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}]  p={p:.2g}  Holm p={holm:.2g}")

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    width = 0.38
    groups = [*METHODS, "majority"] if all((file, "majority_n") in accuracy for file in CAPS) else list(METHODS)
    names = [LABELS[m].replace(" (", "\n(") for m in METHODS] + ["low temperature,\nmajority at power's tokens"] * (len(groups) > len(METHODS))
    for axis, grading in zip(axes, GRADINGS):
        for i, method in enumerate(groups):
            for j, file in enumerate(CAPS):
                interval = accuracy[(file, method, grading)]
                x = i + (j - 0.5) * width
                axis.bar(x, interval.mean, width, color=COLORS.get(method, "tab:cyan"), alpha=0.55 if j == 0 else 1.0,
                         yerr=[[interval.mean - interval.low], [interval.high - interval.mean]], capsize=3,
                         hatch="//" if method == "majority" else None)
                label = f"T={CAPS[file]}" + (f", N={accuracy[(file, 'majority_n')]}" if method == "majority" else "")
                axis.text(x + width / 2 - 0.02, 0.005, label, rotation=90, ha="right", va="bottom", fontsize=6)
        axis.set_xticks(range(len(groups)), names, fontsize=7)
        axis.set_title(f"{grading} grading", fontsize=9)
    axes[0].set_ylabel(f"pass@1 over {problems} problems (95% CI)")
    figure.suptitle("CPU task at two length caps: pale T = 96, solid T = 192", fontsize=10)
    save(figure, args.out, "two_caps.png")


if __name__ == "__main__":
    script_main(main)
