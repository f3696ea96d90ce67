"""Shared by the CPU-reproduction figure scripts: arguments, result loading, labels, saving.

Every script takes `--results DIR` (default experiments/results/cpu) and `--out DIR` (default
paper_figures/out), reads only result files, writes one PNG and prints the numbers it plots.

The main comparison is `MAIN`.jsonl: 72 problems (experiments/configs/cpu/main72.toml; its first
24 problems' records are those of main.jsonl, the 24-problem run it was resumed from).  The
ablation and sampler runs (`SHORT_RUNS`: alpha, nmcmc, samplers) have only those first 24
problems; a comparison of one of them with the main comparison restricts the main records to
the same problems (`on_problems_of`), so that every paired comparison is over the same problems.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "cpu"
OUT = ROOT / "paper_figures" / "out"
MAIN = "main72"                              # the main comparison (72 problems); main.jsonl holds its first 24
SHORT_RUNS = ("alpha", "nmcmc", "samplers")  # runs on the first 24 problems only

LABELS = {
    "greedy": "greedy",
    "base": "base (tau=1)",
    "low_temp": "low temperature (tau=1/alpha)",
    "power_uniform": "power, uniform cuts",
    "power_within_block": "power, within-block cuts",
    "best_of_n": "best-of-N by log p (matched tokens)",
}
COLORS = {
    "greedy": "0.5", "base": "tab:gray", "low_temp": "tab:blue", "power_uniform": "tab:red",
    "power_within_block": "tab:orange", "best_of_n": "tab:green",
}


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory holding the experiment results")
    parser.add_argument("--out", type=Path, default=OUT, help="directory for the PNG")
    return parser.parse_args()


def records(results: Path, name: str) -> list[dict]:
    """The evaluation records of `name`.jsonl (main72, alpha, nmcmc, samplers) under `results`."""
    from mcmc_llm.evaluation import read_records

    path = results / f"{name}.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} not found: run `python experiments/reproduce_cpu.py` first")
    return read_records(path)


def problems(recs: list[dict]) -> set[str]:
    """The task ids (problems) that `recs` cover."""
    return {str(r["task_id"]) for r in recs}


def on_problems_of(recs: list[dict], others: list[dict]) -> list[dict]:
    """`recs` restricted to the problems of `others` (e.g. the main comparison on the 24 problems of
    the ablation runs).  Every problem of `others` must be in `recs`: a restriction that would
    leave problems unpaired is an error, not a silent intersection."""
    wanted = problems(others)
    missing = wanted - problems(recs)
    if missing:
        raise ValueError(f"{len(missing)} problems of the other run are not in these records, e.g. {sorted(missing)[:3]}")
    return [r for r in recs if str(r["task_id"]) in wanted]


def rows(results: Path, name: str) -> list[dict]:
    """Plain JSONL rows (cost_scaling, toy_mixing)."""
    path = results / f"{name}.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} not found: run `python experiments/reproduce_cpu.py` first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def methods_present(recs: list[dict], order) -> list[str]:
    present = {r["method"] for r in recs}
    return [m for m in order if m in present]


def save(figure, out: Path, name: str, layout: bool = True) -> Path:
    """Write `figure` as out/name (after `tight_layout`, unless the caller laid it out itself)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    if layout:
        figure.tight_layout()
    figure.savefig(path, dpi=130)
    print(f"wrote {path}")
    return path
