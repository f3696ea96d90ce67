"""Figure: pass@1 with 95% bootstrap intervals (over problems) for every method of the main CPU
comparison (`common.MAIN`: 72 problems), and the tokens each method sampled per output.  Also
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
    script_main(main)
