"""Figure: histograms of the outputs' mean per-token log-likelihood under the base model,
log p(x)/|x|, and of their confidence, the negative mean per-token entropy of the base model's
next-token distributions, -(1/|x|) sum_t H(p(. | x_<t)), per method of the main CPU comparison.

    python paper_figures/likelihood_confidence.py [--results DIR] [--out DIR]   -> likelihood_confidence.png
"""

from __future__ import annotations

import math

import numpy as np

from common import COLORS, LABELS, arguments, methods_present, records, save

METHODS = ("base", "low_temp", "power_uniform", "power_within_block", "best_of_n")


def per_token(recs, method, field):
    values = [r[field] / r["length"] for r in recs if r["method"] == method and r["length"] > 0]
    return np.array([v for v in values if isinstance(v, float) and math.isfinite(v)])


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    recs = records(args.results, "main")
    methods = methods_present(recs, METHODS)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    print(f"{'method':<22} {'median log p/token':>19} {'median confidence':>18} {'outputs':>8}")
    for method in methods:
        likelihood = per_token(recs, method, "log_p")
        confidence = -per_token(recs, method, "entropy")
        print(f"{method:<22} {np.median(likelihood):>19.3f} {np.median(confidence) if confidence.size else float('nan'):>18.3f} {likelihood.size:>8}")
        style = dict(bins=30, histtype="step", density=True, color=COLORS[method], label=LABELS[method], linewidth=1.5)
        axes[0].hist(likelihood, **style)
        if confidence.size:
            axes[1].hist(confidence, **style)
    axes[0].set_xlabel("mean log p per token (base model)")
    axes[1].set_xlabel("confidence: - mean entropy of p(. | prefix) per token (nats)")
    for axis in axes:
        axis.set_ylabel("density")
    axes[0].legend(fontsize=7)
    figure.suptitle("Likelihood and confidence of the outputs (CPU task)", fontsize=10)
    save(figure, args.out, "likelihood_confidence.png")


if __name__ == "__main__":
    main()
