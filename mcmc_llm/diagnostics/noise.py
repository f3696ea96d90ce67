"""Float noise in per-step traces: changes too small to be movement.

A chain that keeps its sequence records the same log p(x) at every step only up to rounding: the
score of one sequence, computed inside batches of different shapes, moves by up to ~1e-5 in
absolute value (3.4e-6 relative, measured on SmolLM2-135M in float32, 48 tokens).  Such a chain
would look as if it moved: in trace plots, as swings drawn at full scale; in the summary, not
flagged as constant.  `snap_noise` treats a step-to-step change of at most `NOISE_RTOL` relative,

    |x_t - x_{t-1}| <= NOISE_RTOL * max(1, |x_{t-1}|),      NOISE_RTOL = 1e-4,

as no change (the previous value is carried forward), at the steps where the trace shows that the
chain's sequence did not change: the move was rejected, or the accepted proposal equalled the
current sequence (`proposal_differs`), and no tokens were appended (`extension_tokens`).  A change
at a step where the sequence did change is kept however small.  A trace without these stats
applies the tolerance at every step.  For plots, `merge_close_values` also merges values within the
tolerance across chains (the same sequence held by two chains, scored in different batches), and
`summarize` uses `within_tolerance` to decide that a functional is constant and that constant chains
agree (R-hat 1 instead of the inf that a 1.5e-6 difference between two frozen chains would give).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Relative tolerance below which a step-to-step change of a float functional is treated as noise.
NOISE_RTOL = 1e-4


def within_tolerance(values: np.ndarray, rtol: float = NOISE_RTOL) -> bool:
    """True when the finite `values` all lie within `rtol * max(1, |v|)` of each other (max |v| over
    them) and there is at least one: one value up to float noise.  Integer values must be equal."""
    values = np.asarray(values)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if finite.size == 0:
        return False
    spread = float(finite.max()) - float(finite.min())
    if values.dtype.kind != "f":
        return spread == 0
    return spread <= rtol * max(1.0, float(np.abs(finite).max()))


def snap_series(draws: np.ndarray, rtol: float = NOISE_RTOL, unchanged: np.ndarray | None = None) -> np.ndarray:
    """A copy of (chain, draw) `draws` in which each change of at most `rtol` relative to the previous
    kept value is replaced by that value, only where `unchanged` (chain, draw) is True when given
    (integers and exact data pass through unchanged)."""
    draws = np.asarray(draws)
    if draws.ndim != 2 or draws.dtype.kind != "f" or draws.shape[1] < 2:
        return draws
    out = draws.astype(np.float64, copy=True)
    for step in range(1, out.shape[1]):
        previous, current = out[:, step - 1], out[:, step]
        with np.errstate(invalid="ignore"):
            same = np.abs(current - previous) <= rtol * np.maximum(1.0, np.abs(previous))
        if unchanged is not None:
            same &= unchanged[:, step]
        out[:, step] = np.where(same, previous, current)
    return out.astype(draws.dtype, copy=False)


def unchanged_steps(stats: Any) -> np.ndarray | None:
    """(chain, draw) True where the chain's sequence certainly did not change at that step; None when
    the trace does not record `accepted` and `proposal_differs`."""
    if "accepted" not in stats or "proposal_differs" not in stats:
        return None
    accepted = np.nan_to_num(np.asarray(stats["accepted"], dtype=np.float64)) > 0
    differs = np.nan_to_num(np.asarray(stats["proposal_differs"], dtype=np.float64)) > 0
    moved = accepted & differs
    if "extension_tokens" in stats:
        moved |= np.nan_to_num(np.asarray(stats["extension_tokens"], dtype=np.float64)) > 0
    return ~moved


def merge_close_values(draws: np.ndarray, rtol: float = NOISE_RTOL) -> np.ndarray:
    """A copy of float `draws` in which values within `rtol` relative of each other are replaced by the
    smallest of their group (groups never span more than `rtol`: no chaining), across chains and
    steps: for plots, where the same sequence scored on two chains must not look like two values."""
    draws = np.asarray(draws)
    if draws.dtype.kind != "f" or draws.size == 0:
        return draws
    values = np.unique(draws[np.isfinite(draws)])
    if values.size < 2:
        return draws
    representative = values.copy()
    start = values[0]
    for index in range(1, values.size):
        if values[index] - start <= rtol * max(1.0, abs(start)):
            representative[index] = start
        else:
            start = values[index]
    out = draws.copy()
    finite = np.isfinite(draws)
    out[finite] = representative[np.searchsorted(values, draws[finite])]
    return out


def snap_noise(trace: Any, rtol: float = NOISE_RTOL):
    """A Trace whose scalar float samples have their float noise removed (`snap_series`, at the steps
    `unchanged_steps` allows); stats are kept as they are (they record events, not scores)."""
    from mcmc_llm.diagnostics.stages import with_arrays

    unchanged = unchanged_steps(trace.stats)
    samples = {}
    for name, value in trace.samples.items():
        shape_ok = unchanged is not None and np.shape(value)[:2] == unchanged.shape
        samples[name] = snap_series(value, rtol, unchanged if shape_ok else None)
    return with_arrays(trace, samples, dict(trace.stats))


__all__ = ["NOISE_RTOL", "merge_close_values", "snap_noise", "snap_series", "unchanged_steps", "within_tolerance"]
