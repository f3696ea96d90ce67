"""Figure: MH acceptance of power sampling on the CPU task by stage (block) and by the cut's
position relative to the current length, for uniform and within-block cuts (main comparison;
every MH step of every chain, from the records' `step_*` diagnostics; `common.MAIN`, 72 problems).

    python paper_figures/acceptance.py [--results DIR] [--out DIR]     -> acceptance.png
"""

from __future__ import annotations

import numpy as np

from common import COLORS, LABELS, MAIN, arguments, records, save
from mcmc_llm.scripts import script_main

METHODS = ("power_uniform", "power_within_block")
BINS = np.linspace(0.0, 1.0, 11)


def steps(recs, method):
    stage, cut, accepted = [], [], []
    for r in recs:
        if r["method"] == method and "step_accepted" in r["diagnostics"]:
            stage += r["diagnostics"]["step_stage"]
            cut += r["diagnostics"]["step_relative_cut"]
            accepted += r["diagnostics"]["step_accepted"]
    return np.array(stage, dtype=int), np.array(cut, dtype=float), np.array(accepted, dtype=float)


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    recs = records(args.results, MAIN)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.38
    for offset, method in zip((-width / 2, width / 2), METHODS):
        stage, cut, accepted = steps(recs, method)
        if accepted.size == 0:
            continue
        stages = np.unique(stage)
        by_stage = [accepted[stage == s].mean() for s in stages]
        axes[0].bar(stages + 1 + offset, by_stage, width=width, color=COLORS[method], label=LABELS[method])
        which = np.clip(np.digitize(cut, BINS) - 1, 0, len(BINS) - 2)
        centres = (BINS[:-1] + BINS[1:]) / 2
        rates = np.array([accepted[which == b].mean() if (which == b).any() else np.nan for b in range(len(centres))])
        counts = np.array([(which == b).sum() for b in range(len(centres))])
        axes[1].plot(centres, rates, marker="o", color=COLORS[method], label=LABELS[method])
        print(f"{method}: {accepted.size} MH steps, acceptance {accepted.mean():.3f}; by stage "
              + " ".join(f"{s + 1}:{a:.3f}" for s, a in zip(stages, by_stage))
              + "; by relative cut " + " ".join(f"{c:.2f}:{r:.2f}(n={n})" for c, r, n in zip(centres, rates, counts) if n))
    axes[0].set_xlabel("stage (block)")
    axes[0].set_ylabel("acceptance rate")
    axes[1].set_xlabel("cut position / current length")
    axes[1].set_ylabel("acceptance rate")
    for axis in axes:
        axis.legend(fontsize=7)
    figure.suptitle("MH acceptance of power sampling (alpha = 4) on the CPU task", fontsize=10)
    save(figure, args.out, "acceptance.png")


if __name__ == "__main__":
    script_main(main)
