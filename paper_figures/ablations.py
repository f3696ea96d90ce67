"""Figure: the alpha ablation (alpha = 1, 2, 4, 8) and the N_MCMC ablation (0, 1, 2, 4, 10) of power
sampling on the CPU task: pass@1 with 95% bootstrap intervals over problems, and tokens sampled per
output.  alpha = 4 / N_MCMC = 4 is `power_uniform` of the main comparison; the low-temperature
baseline of the main comparison is drawn as a reference line.

    python paper_figures/ablations.py [--results DIR] [--out DIR]     -> ablations.png
"""

from __future__ import annotations

import numpy as np

from common import arguments, records, save
from mcmc_llm.evaluation.bootstrap import pass_at_k_interval


def points(sources):
    """[(x, interval, tokens per output)] for (x, records, method) sources that have records."""
    out = []
    for x, recs, method in sources:
        mine = [r for r in recs if r["method"] == method]
        if mine:
            out.append((x, pass_at_k_interval(recs, method, 1), float(np.mean([r["compute"]["tokens_sampled"] for r in mine]))))
    return out


def panel(axis, data, label, reference):
    xs = [x for x, _, _ in data]
    means = np.array([i.mean for _, i, _ in data])
    axis.errorbar(xs, means, yerr=[means - [i.low for _, i, _ in data], [i.high for _, i, _ in data] - means],
                  marker="o", capsize=4, color="tab:red", label="power sampling")
    if reference is not None:
        axis.axhspan(reference.low, reference.high, color="tab:blue", alpha=0.12, linewidth=0)
        axis.axhline(reference.mean, color="tab:blue", linestyle="--", label="low temperature (main, band: 95% CI)")
    for x, interval, tokens in data:
        axis.annotate(f"{tokens:.0f} tok", (x, interval.high), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
    axis.set_ylim(0.0, max([i.high for _, i, _ in data] + [reference.high if reference is not None else 0.0]) + 0.1)
    axis.set_xlabel(label)
    axis.set_ylabel("pass@1")
    axis.legend(fontsize=7)
    print(label, " ".join(f"{x}: {i.mean:.3f} [{i.low:.3f}, {i.high:.3f}] ({t:.0f} tok)" for x, i, t in data))


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    main_records = records(args.results, "main")
    alpha_records, n_records = records(args.results, "alpha"), records(args.results, "nmcmc")
    alphas = points([(1, alpha_records, "power_alpha1"), (2, alpha_records, "power_alpha2"),
                     (4, main_records, "power_uniform"), (8, alpha_records, "power_alpha8")])
    steps = points([(0, n_records, "power_n0"), (1, n_records, "power_n1"), (2, n_records, "power_n2"),
                    (4, main_records, "power_uniform"), (10, n_records, "power_n10")])
    reference = pass_at_k_interval(main_records, "low_temp", 1) if any(r["method"] == "low_temp" for r in main_records) else None
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panel(axes[0], alphas, "alpha (N_MCMC = 4)", reference)
    axes[0].set_xscale("log", base=2)
    panel(axes[1], steps, "N_MCMC per block (alpha = 4)", reference)
    figure.suptitle("Power-sampling ablations on the CPU task (95% bootstrap CIs over problems)", fontsize=10)
    save(figure, args.out, "ablations.png")


if __name__ == "__main__":
    main()
