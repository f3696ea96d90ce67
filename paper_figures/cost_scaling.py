"""Figure: measured tokens sampled and attention positions per chain against the formulas of
METHOD §4 as T and B vary (toy LM that never emits EOS, N_MCMC = 2), for uniform and
within-block cuts.  Markers: measured; solid lines: exact expectation; dotted: METHOD §4's
approximation (N T^2/(4B) + T, and N T/2 + T).

    python paper_figures/cost_scaling.py [--results DIR] [--out DIR]     -> cost_scaling.png
"""

from __future__ import annotations

from common import arguments, rows, save
from mcmc_llm.scripts import script_main

STYLE = {16: "tab:blue", 32: "tab:orange", 64: "tab:green"}


def main() -> None:
    args = arguments(__doc__)
    import matplotlib.pyplot as plt

    data = rows(args.results, "cost_scaling")
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    print(f"{'kernel':>12} {'T':>4} {'B':>3} {'tokens':>8} {'exact':>8} {'METHOD':>8} {'attention':>10} {'exact':>10}")
    for kernel, marker in (("uniform", "o"), ("within-block", "s")):
        for B, color in STYLE.items():
            mine = sorted((r for r in data if r["kernel"] == kernel and r["B"] == B), key=lambda r: r["T"])
            if not mine:
                continue
            T = [r["T"] for r in mine]
            label = f"{kernel}, B={B}"
            axes[0].plot(T, [r["tokens_per_chain"] for r in mine], marker, color=color, label=label, fillstyle="none" if kernel != "uniform" else "full")
            axes[0].plot(T, [r["tokens_expected"] for r in mine], "-", color=color, linewidth=0.8)
            axes[0].plot(T, [r["tokens_method_formula"] for r in mine], ":", color=color, linewidth=0.8)
            axes[1].plot(T, [r["attention_sampled_per_chain"] for r in mine], marker, color=color, fillstyle="none" if kernel != "uniform" else "full")
            axes[1].plot(T, [r["attention_expected"] for r in mine], "-", color=color, linewidth=0.8)
            for r in mine:
                print(f"{kernel:>12} {r['T']:>4} {B:>3} {r['tokens_per_chain']:>8.1f} {r['tokens_expected']:>8.1f} "
                      f"{r['tokens_method_formula']:>8.1f} {r['attention_sampled_per_chain']:>10.0f} {r['attention_expected']:>10.0f}")
    ratios = [r["tokens_per_chain"] / r["tokens_expected"] for r in data]
    axes[2].scatter([r["tokens_expected"] for r in data], ratios, c=["tab:red" if r["kernel"] == "uniform" else "tab:purple" for r in data], s=14)
    axes[2].axhline(1.0, color="black", linewidth=0.8)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("exact expected tokens per chain")
    axes[2].set_ylabel("measured / exact tokens")
    axes[2].set_title("red: uniform, purple: within-block", fontsize=8)
    print(f"measured/exact tokens: min {min(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} settings")
    for axis, name in zip(axes[:2], ("tokens sampled per chain", "attention positions per chain")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("T_max")
        axis.set_ylabel(name)
    axes[0].legend(fontsize=7)
    figure.suptitle("Cost of power sampling against METHOD §4 (markers measured, solid exact, dotted METHOD approximation)", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.94))  # leave the suptitle its own band
    save(figure, args.out, "cost_scaling.png", layout=False)


if __name__ == "__main__":
    script_main(main)
