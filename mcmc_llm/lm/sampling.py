"""Token laws: how a proposal draws a token from the base model's next-token distribution.

* `SamplingRule`: temperature, then optional top-k / top-p truncation, renormalised; its
  `proposal_logprobs` are the probabilities a token is actually drawn with (`log p_prop`).
* `sampling_law(lm, rule)`: a small integer naming the law (lm, rule), recorded per token so a
  proposal under another law knows to re-score (`mcmc_llm.proposals.suffix.under_law`).
* `Continuation`: generated tokens with their per-token statistics (`log p`, `log p_prop`,
  entropy) and law; `token_statistics` computes them, `is_eos` marks EOS tokens.
* `TemperedProposal`: the proposal temperature of a sampler config (default 1/alpha) and its rule.

With temperature `tau` and no truncation, `log p_prop(v) = log p(v)/tau - log sum_u p(u)^(1/tau)`.
"""

from __future__ import annotations

import dataclasses
import math
import weakref

import torch

from mcmc_llm.core.validate import optional_integer
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch


class TemperedProposal:
    """Mixin of the sampler configs (power sampling, Power-SMC, rollouts): from their fields `alpha`,
    `proposal_temperature` and, when they have them, `top_k` / `top_p`, the proposal's temperature,
    `proposal_temperature` or by default 1/alpha (0.25 for alpha = inf, the max-swap rule), and its
    `SamplingRule`."""

    @property
    def temperature(self) -> float:
        if self.proposal_temperature is not None:
            return self.proposal_temperature
        return 0.25 if math.isinf(self.alpha) else 1.0 / self.alpha

    def sampling_rule(self) -> "SamplingRule":
        return SamplingRule(self.temperature, getattr(self, "top_k", None), getattr(self, "top_p", None))


@dataclasses.dataclass(frozen=True)
class SamplingRule:
    """How the proposal draws a token from the base next-token distribution.

    temperature: tau > 0 divides the log-probs; tau = 0 means greedy (argmax, probability 1).
    top_k / top_p: optional truncation of the tempered distribution (applied in that order);
        the reported `log_q` are then the truncated, renormalised probabilities, and tokens
        outside the kept set have probability zero (the chain cannot propose them).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        if not isinstance(self.temperature, (int, float)) or not (0 <= self.temperature < math.inf):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        optional_integer("top_k", self.top_k)
        if self.top_p is not None and not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p!r}")

    @property
    def full_support(self) -> bool:
        return self.temperature > 0 and self.top_k is None and (self.top_p is None or self.top_p == 1)

    def proposal_logprobs(self, logprobs: torch.Tensor) -> torch.Tensor:
        """Normalised log p_prop [B, V] from base log-probs [B, V] (float64)."""
        logprobs = logprobs.to(torch.float64)
        if self.temperature == 0:
            greedy = torch.full_like(logprobs, -math.inf)
            return greedy.scatter_(-1, logprobs.argmax(-1, keepdim=True), 0.0)
        scores = logprobs / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if self.top_p is not None and self.top_p < 1:
            sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
            probs = torch.softmax(sorted_scores, dim=-1)
            mass_before = torch.cumsum(probs, dim=-1) - probs
            drop_sorted = mass_before >= self.top_p
            drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, -math.inf)
        return torch.log_softmax(scores, dim=-1)


_LAWS: list[tuple[weakref.ref, SamplingRule]] = []  # law id - 1 -> (the LM, the rule)


def sampling_law(lm: LanguageModel, rule: SamplingRule) -> int:
    """A small positive integer naming the token law `rule` applied to `lm` (the same pair always
    gets the same id in a process).  Sequences record, per token, the law its `log_q` is under, so a
    proposal with another law knows to re-score them (`SuffixResampling.complete`)."""
    for index, (ref, known) in enumerate(_LAWS):
        if ref() is lm and known == rule:
            return index + 1
    _LAWS.append((weakref.ref(lm), rule))
    return len(_LAWS)


@dataclasses.dataclass(frozen=True)
class Continuation:
    """Continuations of B contexts: tokens (right-padded) and per-token statistics [B, W].

    law: [B], the `sampling_law` id that row's `log_q` is under (0: unknown).
    stopped_early: [B] bool, rows the engine stopped by their early-stop rule before EOS or their
        cap (`mcmc_llm.lm.early_stop`): their tokens are a prefix of the suffix the rule rejected;
        None when no row had a rule."""

    tokens: TokenBatch
    log_p: torch.Tensor
    log_q: torch.Tensor
    entropy: torch.Tensor
    ended: torch.Tensor
    law: torch.Tensor | None = None
    stopped_early: torch.Tensor | None = None

    def stopped(self) -> torch.Tensor:
        """`stopped_early` as a [B] tensor (all False when unknown)."""
        if self.stopped_early is not None:
            return self.stopped_early
        return torch.zeros(len(self.tokens), dtype=torch.bool, device=self.tokens.ids.device)

    def laws(self) -> torch.Tensor:
        """`law` as a [B] tensor (zeros when unknown)."""
        if self.law is not None:
            return self.law
        return torch.zeros(len(self.tokens), dtype=torch.long, device=self.tokens.ids.device)


def token_statistics(
    logprobs: torch.Tensor, tokens: torch.Tensor, rule: SamplingRule, proposal: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-position statistics from base log-probs [..., V] and the tokens taken [...]; `proposal`:
    `rule.proposal_logprobs(logprobs)` when the caller already has it."""
    logprobs = logprobs.to(torch.float64)
    if proposal is None:
        proposal = rule.proposal_logprobs(logprobs.reshape(-1, logprobs.shape[-1])).reshape(logprobs.shape)
    index = tokens.unsqueeze(-1)
    entropy = -(torch.exp(logprobs) * torch.nan_to_num(logprobs, neginf=0.0)).sum(-1)
    return {
        "log_p": logprobs.gather(-1, index).squeeze(-1),
        "log_q": proposal.gather(-1, index).squeeze(-1),
        "entropy": entropy,
    }


def is_eos(tokens: torch.Tensor, eos_token_ids: tuple[int, ...]) -> torch.Tensor:
    """Whether each token is one of `eos_token_ids` (same shape as `tokens`)."""
    return torch.isin(tokens, torch.as_tensor(eos_token_ids, device=tokens.device))
