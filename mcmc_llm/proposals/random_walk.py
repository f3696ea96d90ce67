"""Gaussian random walk: `x' = x + scale * eps`, `eps ~ N(0, I)`.

Symmetric, so `log q(x'|x) = log q(x|x')`; both are reported (equal), and MH reduces to
Metropolis.
"""

from __future__ import annotations

import torch

from mcmc_llm.core.protocols import Move
from mcmc_llm.core.random import normal


class RandomWalk:
    def __init__(self, scale: float):
        if not (isinstance(scale, (int, float)) and scale > 0 and scale < float("inf")):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.scale = float(scale)

    def propose(self, source, position: torch.Tensor) -> Move:
        step = self.scale * normal(source, position)
        log_q = -0.5 * (step / self.scale).pow(2).sum(-1)
        return Move(position + step, log_q, log_q)
