"""Algorithm 1's extension step: continue every unfinished chain from `p_prop` up to the stage cap.

    extend x by up to B tokens from p_prop    (skipped once x has ended with EOS)

It is not an MH move (no correction), so it belongs to the driver, not to a proposal or kernel:
the lock-step driver calls `extend`; the asynchronous driver submits `extension_request` to its
batch and applies `complete_extension` when the tokens are back.  Row c's token t comes from
`source[c].split(t)`, the chain's stream `.split(k).split("extend").split(TOKENS)` at stage k.
"""

from __future__ import annotations

import torch

from mcmc_llm.core.random import Source
from mcmc_llm.lm.generation import Continuation, SamplingRule, sample_continuations
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.suffix import under_reference


def extension_request(position: SequenceBatch, max_new_tokens: int) -> tuple[TokenBatch, torch.Tensor]:
    """Contexts and budgets of Algorithm 1's extension step: every unfinished chain continues from
    its end up to `max_new_tokens` generated tokens; chains that ended with EOS get budget 0."""
    budget = torch.where(position.ended, torch.zeros_like(position.lengths), max_new_tokens - position.lengths).clamp(min=0)
    return position.contexts(position.lengths), budget


def complete_extension(
    lm: LanguageModel, rule: SamplingRule, position: SequenceBatch, continuation: Continuation, reference_lm: LanguageModel | None = None
) -> SequenceBatch:
    """The extended positions, with the new tokens scored under `reference_lm` when it is not `lm`."""
    continuation = under_reference(lm, reference_lm, rule, position.contexts(position.lengths), continuation)
    return position.splice(position.lengths, continuation)


def extend(
    lm: LanguageModel,
    rule: SamplingRule,
    position: SequenceBatch,
    max_new_tokens: int,
    source: Source,
    reference_lm: LanguageModel | None = None,
) -> SequenceBatch:
    """Algorithm 1's extension step: continue every unfinished chain from `p_prop` up to
    `max_new_tokens` generated tokens (no correction); row c's token t from `source[c].split(t)`."""
    contexts, budget = extension_request(position, max_new_tokens)
    continuation = sample_continuations(lm, contexts, budget, rule, source)
    return complete_extension(lm, rule, position, continuation, reference_lm)
