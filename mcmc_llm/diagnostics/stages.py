"""Which draws ESS and R-hat use: the stages of the block-wise power sampler.

Under block-wise MH the target changes with the stage k (p^alpha on the first (k+1) B tokens), so
draws of different stages come from different laws.  A stage selection is one of

- "last": the draws of the last stage, whose target is p^alpha on the full length cap;
- "all": every draw (what `az.summary(trace_to_arviz(trace))` uses);
- an integer k >= 0: the draws of stage k (0-based).

A step is kept when every chain is at the chosen stage at that step (stats `stage`, shape
(chain, draw)).  `select_stages` returns the trace restricted to those steps, so that any tool
(e.g. `az.summary(trace_to_arviz(select_stages(trace, "last")))`) sees the same draws as `summarize`.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import numpy as np

STAGE_CHOICES = ("last", "all")


def parse_stages(text: str) -> str | int:
    """"last", "all" or a stage index k >= 0 from its text; ValueError naming the bad value."""
    value = str(text).strip().lower()
    if value in STAGE_CHOICES:
        return value
    if value.isdigit():
        return int(value)
    raise ValueError(f"--stages must be 'last', 'all' or a stage index 0, 1, 2, ..., got {text!r}")


def _normalised(stages: Any) -> str | int:
    """The other spellings `summarize` accepts: None is "all", -1 is "last"."""
    if stages is None:
        return "all"
    if isinstance(stages, (int, np.integer)) and not isinstance(stages, bool):
        return "last" if stages == -1 else int(stages)
    return parse_stages(stages)


def stage_mask(trace: Any, stages: Any) -> tuple[np.ndarray | None, str]:
    """(boolean mask over steps or None for every step, a description of the draws used).

    stages: "last", "all", a stage index, or None ("all") / -1 ("last")."""
    stages = _normalised(stages)
    if stages == "all":
        return None, "all draws (every stage)"
    if "stage" not in trace.stats:
        raise ValueError(f"stages={stages!r} needs a `stage` entry in trace.stats; use 'all'")
    recorded = np.asarray(trace.stats["stage"])
    present = sorted({int(k) for k in np.unique(recorded) if k >= 0})
    chosen = max(present) if stages == "last" and present else stages
    mask = (recorded == chosen).all(axis=0)
    if not mask.any():
        raise ValueError(f"no step is at stage {chosen} on every chain; the stages recorded are "
                         f"{', '.join(map(str, present)) or 'none'}")
    return mask, f"stage {chosen} ({int(mask.sum())} draws per chain)"


def select_stages(trace: Any, stages: Any) -> Any:
    """`trace` with only the steps of `stages` in its samples and stats (the same object when "all")."""
    mask, _ = stage_mask(trace, stages)
    if mask is None:
        return trace
    return with_arrays(trace, {name: np.asarray(value)[:, mask] for name, value in trace.samples.items()},
                       {name: np.asarray(value)[:, mask] for name, value in trace.stats.items()})


def with_arrays(trace: Any, samples: dict, stats: dict) -> Any:
    """A copy of `trace` (a `core.trace.Trace` or any dataclass, else a namespace) holding these arrays."""
    if dataclasses.is_dataclass(trace):
        return dataclasses.replace(trace, samples=samples, stats=stats)
    return types.SimpleNamespace(samples=samples, stats=stats, final_state=None)
