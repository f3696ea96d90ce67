"""The one generation path: sample or score continuations with their per-token statistics.

Proposals, baselines and benchmarks all call these two functions.  For every token `x_t` of a
continuation they return, from the same forward pass:

* `log_p[t]  = log p(x_t | x_<t)`, the untempered base model;
* `log_q[t]  = log p_prop(x_t | x_<t)`, the distribution the token was actually drawn from
  (temperature, then optional top-k / top-p truncation, renormalised);
* `entropy[t] = H(p(. | x_<t))`, the base model's next-token entropy (for entropy cuts).

With temperature `tau` and no truncation, `log p_prop(v) = log p(v)/tau - log sum_u p(u)^(1/tau)`.
A continuation stops after an EOS token or after its row's `max_new_tokens`.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from mcmc_llm.core.random import categorical
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch


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
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k!r}")
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


@dataclasses.dataclass(frozen=True)
class Continuation:
    """Continuations of B contexts: tokens (right-padded) and per-token statistics [B, W]."""

    tokens: TokenBatch
    log_p: torch.Tensor
    log_q: torch.Tensor
    entropy: torch.Tensor
    ended: torch.Tensor


def _token_statistics(logprobs: torch.Tensor, tokens: torch.Tensor, rule: SamplingRule) -> dict[str, torch.Tensor]:
    """Per-position statistics from base log-probs [..., V] and the tokens taken [...]."""
    logprobs = logprobs.to(torch.float64)
    proposal = rule.proposal_logprobs(logprobs.reshape(-1, logprobs.shape[-1])).reshape(logprobs.shape)
    index = tokens.unsqueeze(-1)
    entropy = -(torch.exp(logprobs) * torch.nan_to_num(logprobs, neginf=0.0)).sum(-1)
    return {
        "log_p": logprobs.gather(-1, index).squeeze(-1),
        "log_q": proposal.gather(-1, index).squeeze(-1),
        "entropy": entropy,
    }


def _is_eos(tokens: torch.Tensor, eos_token_ids: tuple[int, ...]) -> torch.Tensor:
    return torch.isin(tokens, torch.as_tensor(eos_token_ids, device=tokens.device))


def sample_continuations(
    lm: LanguageModel,
    contexts: TokenBatch,
    max_new_tokens: torch.Tensor | int,
    rule: SamplingRule,
    generator: torch.Generator,
) -> Continuation:
    """Draw one continuation per context from `rule` applied to `lm`, until EOS or the row's cap.

    Rows whose cap is 0 get an empty continuation.  Finished rows are handed to `lm.retire` (a
    backend may keep their encoding for later contexts that extend them, such as the prefix `x_<m`
    of the next MH proposal) and dropped from the batch (`lm.select_rows`), so no compute is spent
    on them.
    """
    batch = len(contexts)
    device = contexts.ids.device
    caps = torch.as_tensor(max_new_tokens, dtype=torch.long, device=device).expand(batch).clone()
    if bool((caps < 0).any()):
        raise ValueError(f"max_new_tokens must be >= 0, got {caps.min().item()}")
    width = max(int(caps.max()) if batch else 0, 1)
    tokens = torch.zeros(batch, width, dtype=torch.long, device=device)
    stats = {name: torch.zeros(batch, width, dtype=torch.float64, device=device) for name in ("log_p", "log_q", "entropy")}
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    ended = torch.zeros(batch, dtype=torch.bool, device=device)
    rows = (caps > 0).nonzero().squeeze(-1)
    if rows.numel() == 0:
        return Continuation(TokenBatch(tokens, lengths), stats["log_p"], stats["log_q"], stats["entropy"], ended)
    state = lm.start(TokenBatch(contexts.ids[rows], contexts.lengths[rows]))
    for t in range(width):
        logprobs = state.logprobs.to(torch.float64)
        proposal = rule.proposal_logprobs(logprobs)
        drawn = categorical(generator, proposal)
        step = _token_statistics(logprobs, drawn, rule)
        tokens[rows, t] = drawn
        for name, value in step.items():
            stats[name][rows, t] = value
        lengths[rows] = t + 1
        lm.counter.tokens_sampled += int(rows.numel())
        stop = _is_eos(drawn, lm.eos_token_ids)
        ended[rows[stop]] = True
        keep = ~stop & (caps[rows] > t + 1)
        if not bool(keep.any()):
            lm.retire(state, torch.arange(len(rows), device=rows.device))
            break
        if not bool(keep.all()):
            lm.retire(state, (~keep).nonzero().squeeze(-1))
            kept = keep.nonzero().squeeze(-1)
            state = lm.select_rows(state, kept)
            rows, drawn = rows[kept], drawn[kept]
        state = lm.advance(state, drawn)
    return Continuation(TokenBatch(tokens, lengths), stats["log_p"], stats["log_q"], stats["entropy"], ended)


def score_continuations(
    lm: LanguageModel, contexts: TokenBatch, continuations: TokenBatch, rule: SamplingRule
) -> Continuation:
    """Per-token statistics of given continuations (no sampling), as `sample_continuations` reports them."""
    stats = lm.positionwise(contexts, continuations, lambda lp, tok: _token_statistics(lp, tok, rule))
    lengths = continuations.lengths
    last = continuations.ids.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
    ended = (lengths > 0) & _is_eos(last, lm.eos_token_ids)
    return Continuation(continuations, stats["log_p"], stats["log_q"], stats["entropy"], ended)
