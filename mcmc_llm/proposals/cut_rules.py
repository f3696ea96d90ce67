"""Cut rules: the distribution `P(m | x)` of the index from which a suffix is resampled.

A rule maps every chain's current sequence (length L) to log-probabilities over cut positions
`m in {lo, ..., L-1}` (0-based generated positions; `lo` is 0, or the current block's first
position for the within-block window).  Because `P(m | x)` is a function of `x` alone, the
reverse move's `P(m | x')` is the same function evaluated at the proposal, and the MH ratio
keeps the term `log P(m | x') - log P(m | x)`.

* `uniform`      P(m|x) = 1/L                                       (the paper)
* `within-block` P(m|x) = 1/(L - lo) on the current block          (the author's note)
* `restart`      P(0|x) = 1: regenerate the whole answer            (an independence sampler)
* `priority`     P(m|x) ∝ exp(beta * s_m),  s_m = -log p_prop(x_m | x_<m), the surprisal
* `entropy`      P(m|x) ∝ exp(beta * max(0, H_m - H_{m-1})),  H_t = H(p(. | x_<t)), H_{-1} = H_0

Priority and entropy rules put positive mass on every position (a softmax of finite scores),
so the kernels stay irreducible.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from mcmc_llm.lm.sequences import SequenceBatch

CUT_RULES = ("uniform", "within-block", "restart", "priority", "entropy")


@dataclasses.dataclass(frozen=True)
class CutRule:
    """One of `CUT_RULES`; `sharpness` is beta for the priority and entropy rules."""

    name: str = "uniform"
    sharpness: float = 1.0

    def __post_init__(self):
        if self.name not in CUT_RULES:
            raise ValueError(f"unknown cut rule {self.name!r}; allowed: {', '.join(CUT_RULES)}")
        if not (isinstance(self.sharpness, (int, float)) and math.isfinite(self.sharpness) and self.sharpness >= 0):
            raise ValueError(f"cut sharpness must be a finite number >= 0, got {self.sharpness!r}")

    @property
    def reads_lengths_only(self) -> bool:
        """True when `P(m | x)` depends on `x` only through its length (uniform, within-block,
        restart), so it can be drawn before `x` is known, given its length."""
        return self.name in ("uniform", "within-block", "restart")

    def log_probs(self, batch: SequenceBatch, block_start: int) -> torch.Tensor:
        """`log P(m | x)` for every chain and position, [C, capacity]; -inf where m is not allowed.

        A row with no allowed position (within-block, when the sequence ended before the block)
        is all -inf: its proposal is the identity move.
        """
        positions = torch.arange(batch.capacity, device=batch.tokens.device)[None]
        lowest = block_start if self.name == "within-block" else 0
        allowed = (positions >= lowest) & (positions < batch.lengths[:, None])
        if self.name == "restart":
            allowed = allowed & (positions == 0)
        scores = torch.zeros_like(batch.log_q)
        if self.name == "priority":
            scores = self.sharpness * torch.clamp(-batch.log_q, max=1e4)
        elif self.name == "entropy":
            previous = torch.cat([batch.entropy[:, :1], batch.entropy[:, :-1]], dim=1)
            scores = self.sharpness * torch.clamp(batch.entropy - previous, min=0.0)
        scores = torch.where(allowed, scores, torch.full_like(scores, -math.inf))
        normaliser = torch.logsumexp(scores, dim=-1, keepdim=True)
        return torch.where(allowed, scores - normaliser, scores)
