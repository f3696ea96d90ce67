"""Figure: pass@1 with 95% bootstrap intervals (over problems) for every method of the main CPU
comparison, and the tokens each method sampled per output.  Also prints paired bootstrap intervals
of pass@1 differences (per-problem differences, problems resampled together).

    python paper_figures/cpu_accuracy.py [--results DIR] [--out DIR]     -> cpu_accuracy.png
"""

from __future__ import annotations

import numpy as np

from common import COLORS, LABELS, arguments, methods_present, records, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval, pass_at_k_by_problem, pass_at_k_interval

PAIRS = [("power_uniform", "low_temp"), ("power_uniform", "base"), ("power_uniform", "power_within_block"),
         ("power_uniform", "best_of_n"), ("power_uniform", "greedy"), ("power_within_block", "low_temp")]


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    recs = records(args.results, "main")
    methods = methods_present(recs, LABELS)
    print(f"{'method':<22} {'pass@1':>7} {'95% CI':>15} {'samples':>8} {'tokens sampled/output':>22} {'mean length':>11}")
    stats = []
    for method in methods:
        interval = pass_at_k_interval(recs, method, 1)
        mine = [r for r in recs if r["method"] == method]
        tokens = np.mean([r["compute"]["tokens_sampled"] for r in mine])
        length = np.mean([r["length"] for r in mine])
        stats.append((method, interval, tokens))
        print(f"{method:<22} {interval.mean:>7.3f} [{interval.low:.3f}, {interval.high:.3f}] {len(mine):>8} {tokens:>22.0f} {length:>11.1f}")
    print("paired differences (same problems resampled together):")
    for a, b in PAIRS:
        if a in methods and b in methods:
            difference = bootstrap_interval(pass_at_k_by_problem(recs, a, 1) - pass_at_k_by_problem(recs, b, 1))
            print(f"  {a} - {b}: {difference.mean:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]")
    figure, axis = plt.subplots(figsize=(8, 4))
    x = np.arange(len(stats))
    for i, (method, interval, tokens) in enumerate(stats):
        axis.bar(i, interval.mean, color=COLORS[method])
        axis.errorbar(i, interval.mean, yerr=[[interval.mean - interval.low], [interval.high - interval.mean]], color="black", capsize=4)
        axis.text(i, interval.high + 0.01, f"{tokens:.0f} tok", ha="center", fontsize=8)
    axis.set_xticks(x, [LABELS[m].replace(" (", "\n(").replace(", ", ",\n") for m, _, _ in stats], fontsize=7)
    axis.set_ylabel("pass@1 (95% bootstrap CI over problems)")
    problems = stats[0][1].problems if stats else 0
    axis.set_title(f"Arithmetic (difficulty 1), SmolLM2-135M-Instruct, {problems} problems; label: tokens sampled per output", fontsize=9)
    save(figure, args.out, "cpu_accuracy.png")


if __name__ == "__main__":
    main()
