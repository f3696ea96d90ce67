"""Acceptance tables of a trace: overall, per stage, per bin of the relative cut position.

Reads stats `accepted` (1 accepted, 0 rejected, NaN no move), and when present
`acceptance_probability` (min(1, MH ratio)), `stage` (block index k, 0-based) and `relative_cut`
(cut index / current length, in [0, 1]).  Only numpy is imported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class AcceptanceCell:
    """Acceptance over the MH moves falling in one group (a stage, or a bin of relative cut positions).

    key: the stage index (int) or the bin `(low, high)` of `relative_cut = cut_index / length`.
    acceptance_rate: fraction of moves accepted; mean_acceptance_probability: mean of `min(1, ratio)`
        (a lower-variance estimate of the same quantity; NaN when not recorded).
    """

    key: Any
    num_moves: int
    acceptance_rate: float
    mean_acceptance_probability: float




def nan_mean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries (NaN when there is none)."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def acceptance_cell(key: Any, accepted: np.ndarray, probability: np.ndarray | None, mask: np.ndarray) -> AcceptanceCell:
    """Acceptance over the moves where `mask` is True (NaN entries of `accepted` are no move)."""
    moves = mask & ~np.isnan(accepted)
    return AcceptanceCell(
        key=key,
        num_moves=int(moves.sum()),
        acceptance_rate=nan_mean(accepted[moves]),
        mean_acceptance_probability=float("nan") if probability is None else nan_mean(probability[moves]),
    )


def acceptance_by_stage(trace: Any) -> tuple[AcceptanceCell, ...]:
    """Acceptance per stage (block index k, 0-based), from stats `accepted` and `stage`."""
    stats = trace.stats
    if "accepted" not in stats or "stage" not in stats:
        return ()
    accepted = np.asarray(stats["accepted"], dtype=np.float64)
    probability = optional_stat(stats, "acceptance_probability")
    stage = np.asarray(stats["stage"])
    return tuple(acceptance_cell(int(k), accepted, probability, stage == k) for k in np.unique(stage) if k >= 0)


def relative_cut_bins(num_bins: int) -> np.ndarray:
    """Bin edges `0, 1/n, ..., 1` for the relative cut position `cut_index / length`."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins}")
    return np.linspace(0.0, 1.0, num_bins + 1)


def relative_cut_bin_index(relative_cut: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin of each relative cut (`floor(r * n)`, with r = 1 in the last bin); -1 for NaN."""
    relative_cut = np.asarray(relative_cut, dtype=np.float64)
    index = np.clip(np.floor(np.nan_to_num(relative_cut, nan=0.0) * num_bins), 0, num_bins - 1).astype(np.int64)
    return np.where(np.isnan(relative_cut), -1, index)


def acceptance_by_relative_cut(trace: Any, num_bins: int = 10) -> tuple[AcceptanceCell, ...]:
    """Acceptance per bin of `relative_cut` (cut index / current length in [0, 1]); empty bins have NaN."""
    stats = trace.stats
    if "accepted" not in stats or "relative_cut" not in stats:
        return ()
    accepted = np.asarray(stats["accepted"], dtype=np.float64)
    probability = optional_stat(stats, "acceptance_probability")
    index = relative_cut_bin_index(stats["relative_cut"], num_bins)
    edges = relative_cut_bins(num_bins)
    return tuple(
        acceptance_cell((float(edges[b]), float(edges[b + 1])), accepted, probability, index == b) for b in range(num_bins)
    )


def optional_stat(stats: Any, name: str) -> np.ndarray | None:
    """stats[name] as floats, or None when the trace does not record it."""
    return np.asarray(stats[name], dtype=np.float64) if name in stats else None
