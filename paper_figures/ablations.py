"""Figure: the alpha ablation (alpha = 1, 2, 4, 8) and the N_MCMC ablation (0, 1, 2, 4, 10) of power
sampling on the CPU task: pass@1 with 95% bootstrap intervals over problems, and tokens sampled per
output.  alpha = 4 / N_MCMC = 4 is `power_uniform` of the main comparison; the low-temperature
baseline of the main comparison is drawn as a reference line.  The ablation runs have the first 24
problems only, so the main comparison's records are restricted to those problems
(`common.on_problems_of`): every point and the reference are on the same 24 problems.  Also
prints each point's mean MH acceptance, mean log p per token and mean total log p.

    python paper_figures/ablations.py [--results DIR] [--out DIR]     -> ablations.png
"""

from __future__ import annotations

import numpy as np

from common import MAIN, arguments, on_problems_of, records, save
from mcmc_llm.evaluation.bootstrap import pass_at_k_interval
from mcmc_llm.scripts import script_main


def points(sources):
    """[(x, interval, tokens per output, extras)] for (x, records, method) sources that have records."""
    out = []
    for x, recs, method in sources:
        mine = [r for r in recs if r["method"] == method]
        if mine:
            rates = [r["diagnostics"]["acceptance_rate"] for r in mine if r["diagnostics"].get("acceptance_rate") is not None]
            extras = {"acceptance": float(np.mean(rates)) if rates else float("nan"),
                      "log p/token": float(np.mean([r["log_p"] / r["length"] for r in mine if r["length"] > 0])),
                      "total log p": float(np.mean([r["log_p"] for r in mine])), "problems": len({r["task_id"] for r in mine})}
            out.append((x, pass_at_k_interval(recs, method, 1), float(np.mean([r["compute"]["tokens_sampled"] for r in mine])), extras))
    return out


def panel(axis, data, label, reference):
    xs = [x for x, _, _, _ in data]
    means = np.array([i.mean for _, i, _, _ in data])
    axis.errorbar(xs, means, yerr=[means - [i.low for _, i, _, _ in data], [i.high for _, i, _, _ in data] - means],
                  marker="o", capsize=4, color="tab:red", label="power sampling")
    if reference is not None:
        axis.axhspan(reference.low, reference.high, color="tab:blue", alpha=0.12, linewidth=0)
        axis.axhline(reference.mean, color="tab:blue", linestyle="--", label="low temperature (main, band: 95% CI)")
    for x, interval, tokens, _ in data:
        axis.annotate(f"{tokens:.0f} tok", (x, interval.high), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
    axis.set_ylim(0.0, max([i.high for _, i, _, _ in data] + [reference.high if reference is not None else 0.0]) + 0.1)
    axis.set_xlabel(label)
    axis.set_ylabel("pass@1")
    axis.legend(fontsize=7)
    print(label)
    for x, i, t, extras in data:
        print(f"  {x:>3}: pass@1 {i.mean:.3f} [{i.low:.3f}, {i.high:.3f}] ({t:.0f} tok/output, {extras['problems']} problems)  "
              f"acceptance {extras['acceptance']:.3f}  mean log p/token {extras['log p/token']:.3f}  mean total log p {extras['total log p']:.1f}")


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    alpha_records, n_records = records(args.results, "alpha"), records(args.results, "nmcmc")
    main_records = on_problems_of(records(args.results, MAIN), alpha_records)  # the ablations' 24 problems
    if {r["task_id"] for r in n_records} != {r["task_id"] for r in alpha_records}:
        raise SystemExit("alpha.jsonl and nmcmc.jsonl cover different problems")
    alphas = points([(1, alpha_records, "power_alpha1"), (2, alpha_records, "power_alpha2"),
                     (4, main_records, "power_uniform"), (8, alpha_records, "power_alpha8")])
    steps = points([(0, n_records, "power_n0"), (1, n_records, "power_n1"), (2, n_records, "power_n2"),
                    (4, main_records, "power_uniform"), (10, n_records, "power_n10")])
    reference = pass_at_k_interval(main_records, "low_temp", 1) if any(r["method"] == "low_temp" for r in main_records) else None
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panel(axes[0], alphas, "alpha (N_MCMC = 4)", reference)
    axes[0].set_xscale("log", base=2)
    panel(axes[1], steps, "N_MCMC per block (alpha = 4)", reference)
    problems = len({r["task_id"] for r in alpha_records})
    figure.suptitle(f"Power-sampling ablations on the CPU task, {problems} problems (95% bootstrap CIs over problems)", fontsize=10)
    save(figure, args.out, "ablations.png")


if __name__ == "__main__":
    script_main(main)
