"""The one recorder of traces: per-chain records of every step, written as steps complete.

Drivers record `(chain, draw)` cells in any order (lock-step drivers a whole column at a time,
asynchronous chains a few cells whenever their moves are decided) and get a `Trace` back:
`samples` holds user-chosen functionals of the positions and the log target density, `stats` the
kernel's flattened info.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch

from mcmc_llm.core.trace import Trace
from mcmc_llm.core.tree import flatten_info

Functional = Callable[[Any], torch.Tensor]


def _as_numpy(value: torch.Tensor) -> np.ndarray:
    value = torch.as_tensor(value).detach().cpu()
    return value.to(torch.float64).numpy() if value.is_floating_point() else value.numpy()


class TraceRecorder:
    """(chain, draw) arrays for `chains` chains and `draws` draws, filled cell by cell."""

    def __init__(self, chains: int, draws: int, functionals: Mapping[str, Functional] | None = None):
        self.chains, self.draws, self.functionals = chains, draws, dict(functionals or {})
        self.samples: dict[str, np.ndarray] = {}
        self.stats: dict[str, np.ndarray] = {}

    def _write(self, group: dict[str, np.ndarray], name: str, chains, draws, value) -> None:
        array = _as_numpy(value)
        if name not in group:
            group[name] = np.zeros((self.chains, self.draws) + array.shape[1:], dtype=array.dtype)
        group[name][chains, draws] = array

    def record(self, chains, draws, state: Any, info: Any) -> None:
        """Record the state after a step and the step's info for chains `chains` at draws `draws`
        (index arrays, or a slice and an int for a whole column)."""
        position = getattr(state, "position", state)
        for name, functional in self.functionals.items():
            self._write(self.samples, name, chains, draws, functional(position))
        if hasattr(state, "log_target"):
            self._write(self.samples, "log_target", chains, draws, state.log_target)
        for name, value in flatten_info(info).items():
            self._write(self.stats, name, chains, draws, value)

    def stat(self, name: str, chains, draws, value) -> None:
        """Record one extra per-step statistic."""
        self._write(self.stats, name, chains, draws, value)

    def trace(self, final_state: Any = None, **extra_stats: np.ndarray) -> Trace | None:
        """The trace so far (None when there are no draws); `extra_stats` are added as they are."""
        if self.draws == 0:
            return None
        return Trace(samples=dict(self.samples), stats={**self.stats, **extra_stats}, final_state=final_state)
