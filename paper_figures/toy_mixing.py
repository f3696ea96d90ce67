"""Figure: TV to the exact p^alpha against tokens spent, per kernel (toy LM mixing study).

Reads experiments/results/cpu/toy_mixing.jsonl (from `python experiments/toy_mixing.py`) and writes
paper_figures/out/toy_mixing_tv.png: one line per kernel, the mean over seeds at each N_MCMC, a
band from the minimum to the maximum over seeds, and the within-block kernel's TV to its own
(nested) target as a dashed line.

    python paper_figures/toy_mixing.py [--results FILE] [--out PNG]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from mcmc_llm.scripts import script_main

ROOT = Path(__file__).resolve().parent.parent


def load_curves(path: Path, column: str) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]]:
    grouped: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            grouped[row["kernel"]][row["mcmc_steps"]].append((row["tokens_per_chain"], row[column]))
    curves = {}
    for kernel, by_steps in grouped.items():
        steps = sorted(by_steps)
        tokens = np.array([np.mean([t for t, _ in by_steps[s]]) for s in steps])
        values = [np.array([v for _, v in by_steps[s]]) for s in steps]
        curves[kernel] = (tokens, np.array([v.mean() for v in values]),
                          (np.array([v.min() for v in values]), np.array([v.max() for v in values])))
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "experiments/results/cpu/toy_mixing.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "paper_figures/out/toy_mixing_tv.png")
    args = parser.parse_args()
    if not args.results.exists():
        raise SystemExit(f"{args.results} not found: run `python experiments/toy_mixing.py` first")
    from mcmc_llm.diagnostics.plots import plot_tv_vs_tokens

    curves = load_curves(args.results, "tv_power")
    nested = load_curves(args.results, "tv_nested").get("within-block")
    if nested is not None:
        curves["within-block vs its nested law"] = nested
    first = json.loads(args.results.read_text().splitlines()[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_tv_vs_tokens(
        curves, args.out, noise_floor=first["noise_floor"], log_x=True,
        title=f"TV to exact p^alpha ({first['model']}, alpha={first['alpha']:g}, "
              f"T={first['max_new_tokens']}, B={first['block_size']}, {first['chains']} chains)",
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    script_main(main)
