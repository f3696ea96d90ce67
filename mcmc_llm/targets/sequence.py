"""Targets over generated token sequences, on the length-capped support S_n.

All are unnormalised log-densities over a `SequenceBatch`; a sequence outside S_n (longer than
n, or shorter than n without a final EOS) has log-density -inf.

* `PowerTarget`:        `alpha * log p(x)`                    (the paper's p^alpha)
* `ProductTarget`:      `log p(x) + log q(x)`                 (a product of two LMs, p·q)
* `RewardTiltedTarget`: `alpha * log p(x) + lambda * r(x)`    (a user-given reward r)

`log p(x)` is read from the batch's cached per-token `log_p` (the reference model the proposal
scored with), so evaluating the target costs no forward pass.  `with_cap(n)` returns the same
target on S_n (the block-wise schedule's stage targets).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch

from mcmc_llm.core.validate import integer, number
from mcmc_llm.lm.generation import SamplingRule, score_continuations
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.sequences import SequenceBatch


def _restrict(log_density: torch.Tensor, batch: SequenceBatch, cap: int) -> torch.Tensor:
    return torch.where(batch.in_support(cap), log_density, torch.full_like(log_density, -math.inf))


@dataclasses.dataclass(frozen=True)
class PowerTarget:
    """`pi(x) ∝ p(x)^alpha` on S_n.  With alpha = inf the log-density is `log p(x)` and the
    kernel must use the max-swap rule (accept iff log p increases), the alpha -> inf limit."""

    alpha: float
    max_new_tokens: int

    def __post_init__(self):
        number("alpha", self.alpha, 0, strict=True, allow_inf=True)  # inf: max-swap
        integer("max_new_tokens", self.max_new_tokens)

    @property
    def max_swap(self) -> bool:
        return math.isinf(self.alpha)

    @property
    def token_power(self) -> float | None:
        """alpha when `log pi(x) = alpha * sum_t log p(x_t | x_<t)` on S_n (-inf elsewhere), a sum of
        per-token terms that early rejection can bound; None under max-swap."""
        return None if self.max_swap else self.alpha

    def with_cap(self, max_new_tokens: int) -> "PowerTarget":
        return dataclasses.replace(self, max_new_tokens=max_new_tokens)

    def log_prob(self, batch: SequenceBatch) -> torch.Tensor:
        scale = 1.0 if self.max_swap else self.alpha
        return _restrict(scale * batch.total_log_p(), batch, self.max_new_tokens)


@dataclasses.dataclass(frozen=True)
class ProductTarget:
    """`pi(x) ∝ p(x)^alpha_p q(x)^alpha_q` on S_n, with `q` another LM over the same vocabulary.

    `q` is scored on the whole sequence each time (one batched forward pass per evaluation)."""

    other: LanguageModel
    max_new_tokens: int
    alpha_p: float = 1.0
    alpha_q: float = 1.0

    def __post_init__(self):
        integer("max_new_tokens", self.max_new_tokens)
        number("alpha_p", self.alpha_p, 0, strict=True, allow_inf=True)
        number("alpha_q", self.alpha_q, 0, strict=True, allow_inf=True)

    max_swap = False

    def with_cap(self, max_new_tokens: int) -> "ProductTarget":
        return dataclasses.replace(self, max_new_tokens=max_new_tokens)

    def log_prob(self, batch: SequenceBatch) -> torch.Tensor:
        scored = score_continuations(self.other, batch.prompts, batch.generated_tokens(), SamplingRule())
        log_q = batch.suffix_sum(scored.log_p.to(batch.log_p), torch.zeros_like(batch.lengths))
        return _restrict(self.alpha_p * batch.total_log_p() + self.alpha_q * log_q, batch, self.max_new_tokens)


@dataclasses.dataclass(frozen=True)
class RewardTiltedTarget:
    """`pi(x) ∝ p(x)^alpha exp(lambda r(x))` on S_n.

    reward: `r(sequences: list[list[int]]) -> sequence of floats`, one per chain (generated tokens,
    EOS included when emitted).  It must be finite on S_n."""

    alpha: float
    reward: Callable[[list[list[int]]], Sequence[float]]
    reward_weight: float
    max_new_tokens: int

    def __post_init__(self):
        number("alpha", self.alpha, 0, strict=True, allow_inf=True)
        integer("max_new_tokens", self.max_new_tokens)
        if not callable(self.reward):
            raise TypeError(f"reward must be callable, got {type(self.reward).__name__}")

    max_swap = False

    def with_cap(self, max_new_tokens: int) -> "RewardTiltedTarget":
        return dataclasses.replace(self, max_new_tokens=max_new_tokens)

    def log_prob(self, batch: SequenceBatch) -> torch.Tensor:
        rewards = torch.as_tensor(list(self.reward(batch.to_lists())), dtype=torch.float64).to(batch.log_p.device)
        if rewards.shape != (batch.num_chains,):
            raise ValueError(f"the reward returned {tuple(rewards.shape)} values; expected one per chain ({batch.num_chains})")
        return _restrict(self.alpha * batch.total_log_p() + self.reward_weight * rewards, batch, self.max_new_tokens)
