"""Figure: task accuracy against tokens spent on the CPU task, for every sampler of p^alpha
(alpha = 4): block-wise MH with uniform, within-block and entropy cuts, Power-SMC, the rollout
sampler, best-of-N by likelihood, and the base and low-temperature baselines.  pass@1 with 95%
bootstrap intervals over problems, against the mean tokens sampled per output (log scale; every
particle and rollout token counted).  Also prints each sampler's paired difference to low
temperature (problems resampled together).

    python paper_figures/samplers_accuracy.py [--results DIR] [--out DIR]   -> samplers_accuracy.png
"""

from __future__ import annotations

import numpy as np

from common import arguments, records, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval, pass_at_k_by_problem, pass_at_k_interval

POINTS = [  # (file, method, label, colour)
    ("main", "base", "base (tau=1)", "tab:gray"),
    ("main", "low_temp", "low temperature", "tab:blue"),
    ("main", "power_uniform", "MH, uniform cuts", "tab:red"),
    ("main", "power_within_block", "MH, within-block cuts", "tab:orange"),
    ("samplers", "power_entropy", "MH, entropy cuts", "tab:brown"),
    ("samplers", "smc", "Power-SMC (5 particles)", "tab:purple"),
    ("samplers", "rollout", "rollout sampler (K=3, M=2, H=4)", "tab:pink"),
    ("main", "best_of_n", "best-of-N by log p", "tab:green"),
]


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    files = {name: records(args.results, name) for name in ("main", "samplers")}
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    print(f"{'method':<34} {'pass@1':>7} {'95% CI':>15} {'outputs':>8} {'tokens/output':>14}")
    for name, method, label, colour in POINTS:
        mine = [r for r in files[name] if r["method"] == method]
        if not mine:
            continue
        interval = pass_at_k_interval(files[name], method, 1)
        tokens = float(np.mean([r["compute"]["tokens_sampled"] for r in mine]))
        axis.errorbar([tokens], [interval.mean], yerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
                      fmt="o", capsize=4, color=colour, label=label)
        paired = ""
        if method != "low_temp" and any(r["method"] == "low_temp" for r in files["main"]):
            difference = bootstrap_interval(pass_at_k_by_problem(files[name], method, 1) - pass_at_k_by_problem(files["main"], "low_temp", 1))
            paired = f"   minus low temperature (paired): {difference.mean:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]"
        print(f"{label:<34} {interval.mean:>7.3f} [{interval.low:.3f}, {interval.high:.3f}] {len(mine):>8} {tokens:>14.0f}{paired}")
    axis.set_xscale("log")
    axis.set_xlabel("tokens sampled per output (mean)")
    axis.set_ylabel("pass@1 (95% bootstrap CI over problems)")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axis.set_title("Samplers of p^4 on the CPU task: accuracy against tokens", fontsize=10)
    save(figure, args.out, "samplers_accuracy.png")


if __name__ == "__main__":
    main()
