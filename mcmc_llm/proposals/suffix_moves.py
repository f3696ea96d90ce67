"""The pieces every suffix move is built from (METHOD §2).

* `CutPlan`: the plan of a suffix move with a cut law (a `SuffixPlan`);
* `under_law(position, sampler)`, `suffix_log_q(position, cut, sampler)`: a sequence's `log_q`
  under a given sampler's law (the backward term of a suffix move must be under the law the
  reverse move would draw with, whatever drew the cached tokens);
* `under_reference(...)`: a continuation's `log p` under the target's reference model;
* `rows_by_lm`, `draw_suffixes`, `propose_suffix`: generate every chain's planned suffix, and the
  three phases of a two-phase proposal in one call (lock-step kernels);
* `move_details`: per-chain diagnostics of a suffix move.
"""

from __future__ import annotations

import dataclasses

import torch

from mcmc_llm.core.protocols import PLAN, TOKENS, Move, Sampler, SuffixPlan, SuffixProposal
from mcmc_llm.core.random import Source, gather, split
from mcmc_llm.core.tree import concat_padded, gather_chains
from mcmc_llm.lm.early_stop import EarlyStop
from mcmc_llm.lm.generation import Continuation, sample_continuations, sampling_law, score_continuations
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch


@dataclasses.dataclass(frozen=True)
class CutPlan:
    """The plan of a suffix move with a cut law (a `SuffixPlan`), batched over chains.

    cut_index [C]; max_new_tokens [C]: the most tokens the new suffix may have; sampler_index [C]
    and samplers: row c's suffix is drawn by `samplers[sampler_index[c]]`; log_cut [C, capacity] =
    log P(m | x); movable [C] (False: no allowed cut, the identity move)."""

    cut_index: torch.Tensor
    max_new_tokens: torch.Tensor
    sampler_index: torch.Tensor
    samplers: tuple
    log_cut: torch.Tensor
    movable: torch.Tensor


def under_reference(lm, reference_lm, rule, contexts: TokenBatch, continuation: Continuation) -> Continuation:
    """`continuation` with its `log_p` and `entropy` from `reference_lm` when that is not the proposing
    `lm` (a proposal from a second LM: the position caches the target model's `log p`)."""
    if reference_lm is None or reference_lm is lm:
        return continuation
    rescored = score_continuations(reference_lm, contexts, continuation.tokens, rule)
    return dataclasses.replace(continuation, log_p=rescored.log_p, entropy=rescored.entropy)


def value_at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`values[c, index[c]]` for every row c: [C, n], [C] -> [C]."""
    return values.gather(1, index[:, None]).squeeze(1)


def under_law(position: SequenceBatch, sampler: Sampler) -> SequenceBatch:
    """`position` with every token's `log_q` under `sampler`'s law: the cached values where a whole
    sequence is under that law already, a re-scoring of the other rows (one forward pass each).

    What a suffix move reads of the current sequence (the backward term, and a cut law that reads
    `log_q`, such as priority cuts) must be a function of the sequence under the proposing law, not
    of which kernel happened to draw each token."""
    law = sampling_law(sampler.lm, sampler.rule)
    positions = torch.arange(position.capacity, device=position.tokens.device)[None]
    inside = positions < position.lengths[:, None]
    stale = (inside & (position.log_q_law != law)).any(-1).nonzero().squeeze(-1)
    if len(stale) == 0:
        return position
    sub = gather_chains(position, stale)
    start = torch.zeros_like(sub.lengths)
    rescored = score_continuations(sampler.lm, sub.contexts(start), sub.suffixes(start), sampler.rule)
    log_q, laws = position.log_q.clone(), position.log_q_law.clone()
    width = rescored.log_q.shape[1]
    log_q[stale, :width] = torch.where(inside[stale, :width], rescored.log_q.to(log_q), log_q[stale, :width])
    laws[stale] = torch.where(inside[stale], torch.full_like(laws[stale], law), laws[stale])
    return dataclasses.replace(position, log_q=log_q, log_q_law=laws)


def suffix_log_q(position: SequenceBatch, cut_index: torch.Tensor, sampler: Sampler) -> torch.Tensor:
    """`sum_{t=m}^{L-1} log p_prop(x_t | x_<t)` under `sampler`'s law for every chain (`under_law`):
    the backward term of a suffix move, for proposals written by users."""
    current = under_law(position, sampler)
    return current.suffix_sum(current.log_q, cut_index)


def rows_by_lm(samplers: tuple, sampler_index: torch.Tensor) -> list[tuple[LanguageModel, torch.Tensor]]:
    """The rows whose sampler uses each distinct LM: [(lm, rows)], one entry per LM that has rows
    (requests of one LM share a batch; their rules may differ row by row)."""
    lm_of_row = [id(samplers[i].lm) for i in torch.as_tensor(sampler_index).cpu().tolist()]
    groups = []
    for lm in {id(sampler.lm): sampler.lm for sampler in samplers}.values():
        rows = torch.as_tensor([r for r, lm_id in enumerate(lm_of_row) if lm_id == id(lm)], dtype=torch.long)
        if len(rows):
            groups.append((lm, rows))
    return groups


def rows_by_sampler(samplers: tuple, sampler_index: torch.Tensor) -> list[tuple[Sampler, torch.Tensor]]:
    """The rows of each distinct sampler (equal samplers, one law, form one group): [(sampler, rows)]
    in order of first index; a plan with one sampler per row (`(s,) * C`) is one group, not C."""
    index = torch.as_tensor(sampler_index).cpu()
    groups: dict = {}
    for i in index.unique().tolist():
        groups.setdefault(samplers[i], []).append(i)
    return [(sampler, torch.isin(index, torch.as_tensor(ids)).nonzero().squeeze(-1)) for sampler, ids in groups.items()]


def draw_suffixes(position: SequenceBatch, plan: SuffixPlan, source: Source, stop: EarlyStop | None = None) -> Continuation:
    """Generate every chain's planned suffix: from prompt + x_<cut_index, at most `max_new_tokens`
    tokens drawn by its sampler, row c's token t from `source[c].split(t)`, stopping rows by
    `stop` (lock-step drivers)."""
    contexts = position.contexts(plan.cut_index)
    if len(plan.samplers) == 1:
        sampler = plan.samplers[0]
        return sample_continuations(sampler.lm, contexts, plan.max_new_tokens, sampler.rule, source, stop)
    index = plan.sampler_index.cpu()
    parts, order = [], []
    for lm, rows in rows_by_lm(plan.samplers, index):
        rules = [plan.samplers[i].rule for i in index[rows].tolist()]
        budget = plan.max_new_tokens[rows.to(plan.max_new_tokens.device)]
        rows_stop = None if stop is None else gather_chains(stop, rows)
        parts.append(sample_continuations(lm, gather_chains(contexts, rows), budget, rules, gather(source, rows), rows_stop))
        order.append(rows)
    return gather_chains(concat_padded(parts), torch.argsort(torch.cat(order)))


def propose_suffix(proposal: SuffixProposal, source: Source, position: SequenceBatch) -> Move:
    """The three phases of a suffix proposal in one call: plan from `source.split(PLAN)`, generate
    from `source.split(TOKENS)`, complete."""
    plan = proposal.plan(split(source, PLAN), position)
    return proposal.complete(position, plan, draw_suffixes(position, plan, split(source, TOKENS)))


def move_details(position: SequenceBatch, proposed: SequenceBatch, cut_index: torch.Tensor, continuation: Continuation) -> dict:
    """Per-chain diagnostics of a suffix move."""
    current_length = position.lengths.clamp(min=1).to(torch.float64)
    return {
        "cut_index": cut_index,
        "relative_cut": cut_index.to(torch.float64) / current_length,
        "tokens_resampled": continuation.tokens.lengths,
        "proposed_length": proposed.lengths,
        # Whether x' differs from x: an accepted move that regenerated the same suffix leaves the chain where it was.
        "proposal_differs": (proposed.lengths != position.lengths) | (proposed.tokens != position.tokens).any(-1),
    }
