"""An enumerable categorical target over the states {0, ..., K-1}.

    pi(i) ∝ exp(logits_i)

Positions are integer tensors of shape [C].  The exact pmf is `softmax(logits)`.
"""

from __future__ import annotations

import torch

from mcmc_llm.core.random import categorical


class Categorical:
    def __init__(self, logits):
        self.logits = torch.as_tensor(logits, dtype=torch.float64)
        if self.logits.dim() != 1 or self.logits.numel() < 1:
            raise ValueError(f"logits must be a non-empty 1-D sequence, got shape {tuple(self.logits.shape)}")
        if bool(torch.isnan(self.logits).any()) or bool(torch.isposinf(self.logits).any()):
            raise ValueError("logits must not be NaN or +inf")
        self.num_states = self.logits.numel()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in (torch.int64, torch.int32) or x.dim() != 1:
            raise ValueError(f"positions must be a 1-D integer tensor (one state per chain), got {x.dtype} {tuple(x.shape)}")
        out = torch.full(x.shape, -torch.inf, dtype=torch.float64)
        inside = (x >= 0) & (x < self.num_states)
        out[inside] = self.logits[x[inside]]
        return out

    def pmf(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def sample(self, source, num: int) -> torch.Tensor:
        return categorical(source, self.logits.expand(num, -1))
