"""Figure: histograms of the outputs' mean per-token log-likelihood under the base model,
log p(x)/|x|, and of their confidence, the negative mean per-token entropy of the base model's
next-token distributions, -(1/|x|) sum_t H(p(. | x_<t)), per method of the main CPU comparison
(`common.MAIN`: 72 problems).  Prints their medians and the mean total log p(x) of every method
(greedy too, for reference; it is not drawn).

    python paper_figures/likelihood_confidence.py [--results DIR] [--out DIR]   -> likelihood_confidence.png
"""

from __future__ import annotations

import math

import numpy as np

from common import COLORS, LABELS, MAIN, arguments, methods_present, records, save
from mcmc_llm.scripts import script_main

METHODS = ("base", "low_temp", "power_uniform", "power_within_block", "best_of_n")
PRINTED = METHODS + ("greedy",)


def per_token(recs, method, field):
    values = [r[field] / r["length"] for r in recs if r["method"] == method and r["length"] > 0]
    return np.array([v for v in values if isinstance(v, float) and math.isfinite(v)])


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    recs = records(args.results, MAIN)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    print(f"{'method':<22} {'median log p/token':>19} {'median confidence':>18} {'mean total log p':>17} {'outputs':>8}")
    for method in methods_present(recs, PRINTED):
        likelihood = per_token(recs, method, "log_p")
        confidence = -per_token(recs, method, "entropy")
        total = np.mean([r["log_p"] for r in recs if r["method"] == method])
        print(f"{method:<22} {np.median(likelihood):>19.3f} {np.median(confidence) if confidence.size else float('nan'):>18.3f} "
              f"{total:>17.1f} {likelihood.size:>8}")
        if method not in METHODS:
            continue
        style = dict(bins=30, histtype="step", density=True, color=COLORS[method], label=LABELS[method], linewidth=1.5)
        axes[0].hist(likelihood, **style)
        if confidence.size:
            axes[1].hist(confidence, **style)
    axes[0].set_xlabel("mean log p per token (base model)")
    axes[1].set_xlabel("confidence: - mean entropy of p(. | prefix) per token (nats)")
    for axis in axes:
        axis.set_ylabel("density")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Likelihood and confidence of the outputs (CPU task, {len({r['task_id'] for r in recs})} problems)", fontsize=10)
    save(figure, args.out, "likelihood_confidence.png")


if __name__ == "__main__":
    script_main(main)
