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

import torch

from mcmc_llm.core.protocols import Move
from mcmc_llm.core.random import categorical
from mcmc_llm.lm.generation import SamplingRule, sample_continuations, score_continuations
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.power.cuts import CutRule
from mcmc_llm.power.sequences import SequenceBatch


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

    def propose(self, generator: torch.Generator, position: SequenceBatch) -> Move:
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
        contexts = position.contexts(cut_index)
        continuation = sample_continuations(self.lm, contexts, budget, self.rule, generator)
        if self.reference_lm is not self.lm:
            rescored = score_continuations(self.reference_lm, contexts, continuation.tokens, self.rule)
            continuation = type(continuation)(
                continuation.tokens, rescored.log_p, continuation.log_q, rescored.entropy, continuation.ended
            )
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
    budget = torch.where(position.ended, torch.zeros_like(position.lengths), max_new_tokens - position.lengths).clamp(min=0)
    contexts = position.contexts(position.lengths)
    continuation = sample_continuations(lm, contexts, budget, rule, generator)
    if reference_lm is not None and reference_lm is not lm:
        rescored = score_continuations(reference_lm, contexts, continuation.tokens, rule)
        continuation = type(continuation)(
            continuation.tokens, rescored.log_p, continuation.log_q, rescored.entropy, continuation.ended
        )
    return position.splice(position.lengths, continuation)

