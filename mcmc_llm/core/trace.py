"""A run's record: per-step functionals of the positions and per-step kernel statistics.

Every array has the chain as its first axis and the draw (step) as its second, the layout
ArviZ uses (`mcmc_llm.diagnostics.trace_to_arviz(trace)` converts it).  `samples` holds user-chosen functionals of the positions (e.g. `log p(x)`, length);
`stats` holds what the kernel reported (accepted, log acceptance ratio, cut index, tokens spent).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Trace:
    samples: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    final_state: Any = None

    @property
    def num_chains(self) -> int:
        first = next(iter({**self.samples, **self.stats}.values()))
        return first.shape[0]

    @property
    def num_draws(self) -> int:
        first = next(iter({**self.samples, **self.stats}.values()))
        return first.shape[1]

    def acceptance_rate(self) -> float:
        """Fraction of accepted moves over all chains and steps (NaN if nothing was recorded); for a
        cycle, over every component's `k<i>.accepted` together."""
        fields = [self.stats["accepted"]] if "accepted" in self.stats else [
            value for name, value in self.stats.items() if name.split(".")[-1] == "accepted"
        ]
        if not fields or all(value.size == 0 for value in fields):
            return float("nan")
        return float(np.nanmean(np.concatenate([value.astype(np.float64).ravel() for value in fields])))
