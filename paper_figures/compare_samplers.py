"""Figure: TV to the exact p^alpha against tokens spent per final sample, for MH, SMC, rollouts and best-of-N.

Reads experiments/results/compare_samplers.jsonl (from `python experiments/compare_samplers.py`) and
writes paper_figures/out/compare_samplers.png: one line per method (mean over seeds at each setting,
band from the minimum to the maximum over seeds), the noise floor of that many exact draws (dashed),
and best-of-N's exact law (no sampling noise) as its own dashed line.  (Drawn here rather than with
`diagnostics.plots.plot_tv_vs_tokens` so the ten-entry legend can sit outside the axes.)

    python paper_figures/compare_samplers.py [--results FILE] [--out PNG]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from mcmc_llm.scripts import script_main

ROOT = Path(__file__).resolve().parent.parent


def load_curves(rows: list[dict], column: str, methods=None) -> dict:
    grouped: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if column in row and (methods is None or row["method"] in methods):
            grouped[row["method"]][row["value"]].append((row["tokens_per_sample"], row[column]))
    curves = {}
    for method, by_value in grouped.items():
        values = sorted(by_value)
        tokens = np.array([np.mean([t for t, _ in by_value[v]]) for v in values])
        tv = [np.array([x for _, x in by_value[v]]) for v in values]
        curves[method] = (tokens, np.array([x.mean() for x in tv]),
                          (np.array([x.min() for x in tv]), np.array([x.max() for x in tv])))
    return curves


STYLES = {  # method -> (colour, line style, marker)
    "MH uniform": ("C0", "-", "o"), "MH within-block": ("C1", "-", "o"), "MH entropy": ("C2", "-", "o"),
    "SMC": ("C3", "-", "s"), "SMC + 2 MH (end)": ("C4", "-", "s"),
    "rollout K=V": ("C5", "-", "^"), "rollout K=V, no jackknife": ("C6", "--", "^"), "rollout K=3": ("C9", ":", "^"),
    "best-of-N": ("C7", "-", "D"), "best-of-N (exact law)": ("black", ":", None),
}


def draw(curves: dict, path: Path, noise_floor: float, title: str) -> Path:
    """TV against tokens per final sample (log x), legend outside the axes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 4.8))
    axes = figure.subplots()
    for name, (tokens, tv, band) in curves.items():
        colour, style, marker = STYLES.get(name, (None, "-", "o"))
        axes.plot(tokens, tv, linestyle=style, marker=marker, markersize=3.5, color=colour, label=name)
        axes.fill_between(tokens, band[0], band[1], color=colour, alpha=0.15, linewidth=0)
    axes.axhline(noise_floor, color="0.3", linestyle="--", linewidth=1, label="noise floor (exact draws)")
    axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel("tokens drawn per final sample (mean over runs)")
    axes.set_ylabel("total variation to exact p^alpha")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "experiments/results/compare_samplers.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "paper_figures/out/compare_samplers.png")
    args = parser.parse_args()
    if not args.results.exists():
        raise SystemExit(f"{args.results} not found: run `python experiments/compare_samplers.py` first")
    rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    curves = load_curves(rows, "tv_power")
    exact_best = load_curves(rows, "tv_exact_law", methods={"best-of-N"}).get("best-of-N")
    if exact_best is not None:
        curves["best-of-N (exact law)"] = exact_best
    curves = {name: curves[name] for name in sorted(curves, key=lambda n: list(STYLES).index(n) if n in STYLES else 99)}
    first = rows[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw(curves, args.out, first["noise_floor"],
         f"TV to exact p^alpha ({first['model']}, alpha={first['alpha']:g}, n={first['max_new_tokens']}, "
         f"MH B={first['block_size']}, {first['draws']} draws per setting; band: min-max over seeds)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    script_main(main)
