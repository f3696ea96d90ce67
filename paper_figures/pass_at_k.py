"""Figure: pass@k for k = 1..16 (unbiased estimator from 16 samples per problem) for the base
model, low-temperature sampling and power sampling, with 95% bootstrap bands over problems, on
the main comparison (`common.MAIN`: 72 problems; lenient grading).

    python paper_figures/pass_at_k.py [--results DIR] [--out DIR]     -> pass_at_k.png
"""

from __future__ import annotations

from common import COLORS, LABELS, MAIN, arguments, records, save
from mcmc_llm.evaluation.bootstrap import outcomes_by_problem, pass_at_k_interval
from mcmc_llm.scripts import script_main

METHODS = ("base", "low_temp", "power_uniform")


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    recs = records(args.results, MAIN)
    figure, axis = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        outcomes = outcomes_by_problem(recs, method)
        if not outcomes:
            continue
        largest = min(len(v) for v in outcomes.values())
        ks = list(range(1, largest + 1))
        intervals = [pass_at_k_interval(recs, method, k) for k in ks]
        print(method, " ".join(f"pass@{k}={i.mean:.3f}" for k, i in zip(ks, intervals) if k in (1, 2, 4, 8, 16)))
        axis.plot(ks, [i.mean for i in intervals], marker="o", markersize=3, color=COLORS[method], label=LABELS[method])
        axis.fill_between(ks, [i.low for i in intervals], [i.high for i in intervals], color=COLORS[method], alpha=0.15)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("k")
    axis.set_ylabel("pass@k")
    axis.legend(fontsize=8)
    axis.set_title(f"pass@k on the CPU task, {len({r['task_id'] for r in recs})} problems (bands: 95% bootstrap over problems)", fontsize=9)
    save(figure, args.out, "pass_at_k.png")


if __name__ == "__main__":
    script_main(main)
