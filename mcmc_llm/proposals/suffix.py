"""The suffix-resampling proposal (METHOD §2) with a pluggable cut rule.

Draw a cut `m ~ P(m | x)`, keep `x_<m`, and resample `x'_m, x'_{m+1}, ...` from the proposal
LM `p_prop` until EOS or the length cap n.  The exact forward and backward log-probabilities,
with the cut as an auxiliary variable whose reverse move uses the same `m`, are

    log q(x' | x) = log P(m | x)  + sum_{t=m}^{L'-1} log p_prop(x'_t | x'_<t)
    log q(x | x') = log P(m | x') + sum_{t=m}^{L-1}  log p_prop(x_t  | x_<t)

where L and L' are the two sequences' own lengths (they differ whenever EOS lands elsewhere).
With the power target the MH log-ratio is then

    alpha [sum_{t>=m} log p(x'_t) - sum_{t>=m} log p(x_t)] + log q(x | x') - log q(x' | x).

The per-token `log p` and `log p_prop` of the new suffix come from the same forward pass that
sampled it; those of the current suffix are cached in the position.  If the target's reference
model differs from the proposal LM (`reference_lm`), the new suffix is scored under it too.
"""

from __future__ import annotations

import dataclasses

import torch

from mcmc_llm.core.protocols import Move
from mcmc_llm.core.random import categorical
from mcmc_llm.lm.generation import Continuation, SamplingRule, sample_continuations, score_continuations
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.proposals.cut_rules import CutRule
from mcmc_llm.lm.sequences import SequenceBatch


@dataclasses.dataclass(frozen=True)
class SuffixPlan:
    """The cut drawn for every chain before its suffix is generated (batched over chains).

    cut_index [C]; log_cut [C, capacity] = log P(m | x); movable [C] (False: no allowed cut, the
    identity move); budget [C]: the most tokens the new suffix may have."""

    cut_index: torch.Tensor
    log_cut: torch.Tensor
    movable: torch.Tensor
    budget: torch.Tensor

    def contexts(self, position: SequenceBatch) -> TokenBatch:
        """Prompt + x_<m of every chain: what the new suffix continues."""
        return position.contexts(self.cut_index)


def _under_reference(lm, reference_lm, rule, contexts: TokenBatch, continuation: Continuation) -> Continuation:
    """`continuation` with its `log_p` and `entropy` from `reference_lm` when that is not the proposing `lm`."""
    if reference_lm is None or reference_lm is lm:
        return continuation
    rescored = score_continuations(reference_lm, contexts, continuation.tokens, rule)
    return Continuation(continuation.tokens, rescored.log_p, continuation.log_q, rescored.entropy, continuation.ended)


def _at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return values.gather(1, index[:, None]).squeeze(1)


class SuffixResampling:
    """Suffix-resampling proposal on S_n (n = `max_new_tokens`), cut by `cut_rule`.

    lm: the proposal LM; `rule`: how it samples (temperature, optional truncation).
    block_start: first position of the current block (used by the within-block window).
    reference_lm: the model whose per-token log p the position caches (default: `lm`).
    """

    def __init__(
        self,
        lm: LanguageModel,
        rule: SamplingRule,
        cut_rule: CutRule,
        max_new_tokens: int,
        *,
        block_start: int = 0,
        reference_lm: LanguageModel | None = None,
    ):
        if block_start < 0 or block_start >= max_new_tokens:
            raise ValueError(f"block_start must be in [0, max_new_tokens={max_new_tokens}), got {block_start}")
        self.lm = lm
        self.rule = rule
        self.cut_rule = cut_rule
        self.max_new_tokens = max_new_tokens
        self.block_start = block_start
        self.reference_lm = reference_lm if reference_lm is not None else lm

    def plan(self, generator: torch.Generator, position: SequenceBatch) -> SuffixPlan:
        """Draw the cut of every chain: the first half of `propose`, before any token is generated."""
        log_cut = self.cut_rule.log_probs(position, self.block_start)
        movable = torch.isfinite(log_cut).any(-1)
        # Rows with no allowed cut take the identity move: cut at their end, resample nothing.
        fallback = torch.where(
            torch.arange(position.capacity, device=log_cut.device)[None] == position.lengths[:, None].clamp(max=position.capacity - 1),
            0.0,
            -torch.inf,
        ).to(log_cut)
        cut_index = categorical(generator, torch.where(movable[:, None], log_cut, fallback))
        cut_index = torch.where(movable, cut_index, position.lengths)
        budget = torch.where(movable, self.max_new_tokens - cut_index, torch.zeros_like(cut_index))
        return SuffixPlan(cut_index, log_cut, movable, budget)

    def complete(self, position: SequenceBatch, plan: SuffixPlan, continuation: Continuation) -> Move:
        """The move once the new suffixes `continuation` (drawn from `plan.contexts(position)` with at
        most `plan.budget` tokens) are known: the second half of `propose`."""
        cut_index, log_cut, movable = plan.cut_index, plan.log_cut, plan.movable
        continuation = _under_reference(self.lm, self.reference_lm, self.rule, plan.contexts(position), continuation)
        proposed = position.splice(cut_index, continuation)
        log_cut_reverse = self.cut_rule.log_probs(proposed, self.block_start)
        safe_index = cut_index.clamp(max=position.capacity - 1)
        zero = torch.zeros_like(position.log_q[:, 0])
        log_q_forward = torch.where(
            movable, _at(log_cut, safe_index) + proposed.suffix_sum(proposed.log_q, cut_index), zero
        )
        log_q_backward = torch.where(
            movable, _at(log_cut_reverse, safe_index) + position.suffix_sum(position.log_q, cut_index), zero
        )
        current_length = position.lengths.clamp(min=1).to(torch.float64)
        details = {
            "cut_index": cut_index,
            "relative_cut": cut_index.to(torch.float64) / current_length,
            "tokens_resampled": continuation.tokens.lengths,
            "proposed_length": proposed.lengths,
            # Whether x' differs from x: an accepted move that regenerated the same suffix leaves the chain where it was.
            "proposal_differs": (proposed.lengths != position.lengths) | (proposed.tokens != position.tokens).any(-1),
        }
        return Move(proposed, log_q_forward, log_q_backward, details)

    def propose(self, generator: torch.Generator, position: SequenceBatch) -> Move:
        plan = self.plan(generator, position)
        continuation = sample_continuations(self.lm, plan.contexts(position), plan.budget, self.rule, generator)
        return self.complete(position, plan, continuation)


def extension_request(position: SequenceBatch, max_new_tokens: int) -> tuple[TokenBatch, torch.Tensor]:
    """Contexts and budgets of Algorithm 1's extension step: every unfinished chain continues from
    its end up to `max_new_tokens` generated tokens; chains that ended with EOS get budget 0."""
    budget = torch.where(position.ended, torch.zeros_like(position.lengths), max_new_tokens - position.lengths).clamp(min=0)
    return position.contexts(position.lengths), budget


def complete_extension(
    lm: LanguageModel, rule: SamplingRule, position: SequenceBatch, continuation: Continuation, reference_lm: LanguageModel | None = None
) -> SequenceBatch:
    """The extended positions, with the new tokens scored under `reference_lm` when it is not `lm`."""
    continuation = _under_reference(lm, reference_lm, rule, position.contexts(position.lengths), continuation)
    return position.splice(position.lengths, continuation)


def extend(
    lm: LanguageModel,
    rule: SamplingRule,
    position: SequenceBatch,
    max_new_tokens: int,
    generator: torch.Generator,
    reference_lm: LanguageModel | None = None,
) -> SequenceBatch:
    """Algorithm 1's extension step: continue every unfinished chain from `p_prop` up to
    `max_new_tokens` generated tokens (no correction)."""
    contexts, budget = extension_request(position, max_new_tokens)
    continuation = sample_continuations(lm, contexts, budget, rule, generator)
    return complete_extension(lm, rule, position, continuation, reference_lm)
