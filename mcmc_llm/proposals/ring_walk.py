"""Random walk on a ring of integer states {0, ..., K-1}.

    x' = (x + 1) mod K  with probability p,      x' = (x - 1) mod K  with probability 1 - p.

`log q(x'|x)` is `log p` for a step up and `log(1 - p)` for a step down; the reverse move takes the
opposite step, so `log q(x|x')` swaps the two.  With `p = 1/2` the walk is symmetric and MH reduces to
Metropolis; any other `p` gives an asymmetric proposal whose Hastings correction `log((1-p)/p)` per
step up is not zero, which makes it a small test of the correction.  Needs K >= 3 (on two states the
up and down steps coincide).
"""

from __future__ import annotations

import math

import torch

from mcmc_llm.core.protocols import Move
from mcmc_llm.core.random import uniform
from mcmc_llm.core.validate import integer


class RingWalk:
    def __init__(self, num_states: int, up_probability: float = 0.5):
        num_states = integer("num_states", num_states, 3)
        if not (isinstance(up_probability, (int, float)) and 0.0 < up_probability < 1.0):
            raise ValueError(f"up_probability must lie strictly between 0 and 1, got {up_probability!r}")
        self.num_states = num_states
        self.up_probability = float(up_probability)

    def propose(self, source, position: torch.Tensor) -> Move:
        if position.dim() != 1 or position.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                "positions must be a 1-D integer tensor (one state per chain), "
                f"got {position.dtype} {tuple(position.shape)}"
            )
        log_up = torch.full(position.shape, math.log(self.up_probability), dtype=torch.float64, device=position.device)
        log_down = torch.full_like(log_up, math.log1p(-self.up_probability))
        up = uniform(source, log_up) < self.up_probability
        proposed = torch.remainder(position + torch.where(up, 1, -1).to(position.dtype), self.num_states)
        log_q_forward = torch.where(up, log_up, log_down)
        log_q_backward = torch.where(up, log_down, log_up)
        return Move(proposed, log_q_forward, log_q_backward, {"step_up": up})
