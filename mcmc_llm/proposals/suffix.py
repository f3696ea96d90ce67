"""The suffix-resampling proposal (METHOD §2) with a pluggable cut rule.

Draw a cut `m ~ P(m | x)`, keep `x_<m`, and resample `x'_m, x'_{m+1}, ...` from the proposal
law `p_prop` (an LM and a sampling rule) until EOS or the length cap n.  The exact forward and
backward log-probabilities, with the cut as an auxiliary variable whose reverse move uses the
same `m`, are

    log q(x' | x) = log P(m | x)  + sum_{t=m}^{L'-1} log p_prop(x'_t | x'_<t)
    log q(x | x') = log P(m | x') + sum_{t=m}^{L-1}  log p_prop(x_t  | x_<t)

where L and L' are the two sequences' own lengths (they differ whenever EOS lands elsewhere).
With the power target the MH log-ratio is then

    alpha [sum_{t>=m} log p(x'_t) - sum_{t>=m} log p(x_t)] + log q(x | x') - log q(x' | x).

`log p_prop(x_t | x_<t)` in the backward term must be *this* proposal's law.  The position caches
every token's `log_q` together with the law it is under (`SequenceBatch.log_q_law`); where a
token of the current sequence was drawn by another law (another kernel of a mixture or cycle, an
extension at another temperature, a sequence given from outside), the sequence is re-scored under
this proposal's law (`under_law`) before the backward term and any cut law that reads `log_q`
(priority cuts) are evaluated, so both are functions of the sequence alone.  The new suffix's `log p` and `log p_prop` come from the same forward pass
that sampled it.  If the target's reference model differs from the proposal LM (`reference_lm`),
the new suffix is scored under it too.

`SuffixResampling` is a two-phase `SuffixProposal` (`mcmc_llm.core.protocols`): `plan` draws the
cut, a driver generates the suffixes, `complete` builds the `Move`.  `propose` runs the three
phases in one call, for lock-step kernels.
"""

from __future__ import annotations

import dataclasses

import torch

from mcmc_llm.core.protocols import PLAN, TOKENS, Move, Sampler, SuffixPlan, SuffixProposal
from mcmc_llm.core.random import Source, gather, split
from mcmc_llm.core.tree import concat_padded, gather_chains
from mcmc_llm.lm.early_stop import MARGIN, EarlyStop
from mcmc_llm.lm.generation import Continuation, SamplingRule, sample_continuations, sampling_law, score_continuations
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.cut_rules import CutRule, resolve_cut_rule


@dataclasses.dataclass(frozen=True)
class CutPlan:
    """`SuffixResampling`'s plan (a `SuffixPlan`), batched over chains.

    cut_index [C]; max_new_tokens [C]: the most tokens the new suffix may have; sampler_index [C]
    (all 0) and samplers: the one `Sampler`; log_cut [C, capacity] = log P(m | x); movable [C]
    (False: no allowed cut, the identity move)."""

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


def _at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
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


class SuffixResampling:
    """Suffix-resampling proposal on S_n (n = `max_new_tokens`), cut by `cut_rule`.

    lm: the proposal LM; `rule`: how it samples (temperature, optional truncation).
    cut_rule: a `CutRule` object or a registry name ("uniform", "within-block", ...).
    block_start: first position of the current block (used by the within-block window).
    reference_lm: the model whose per-token log p the position caches (default: `lm`).
    """

    def __init__(
        self,
        lm: LanguageModel,
        rule: SamplingRule,
        cut_rule: CutRule | str,
        max_new_tokens: int,
        *,
        block_start: int = 0,
        reference_lm: LanguageModel | None = None,
    ):
        if block_start < 0 or block_start >= max_new_tokens:
            raise ValueError(f"block_start must be in [0, max_new_tokens={max_new_tokens}), got {block_start}")
        self.lm = lm
        self.rule = rule
        self.cut_rule = resolve_cut_rule(cut_rule)
        self.max_new_tokens = max_new_tokens
        self.block_start = block_start
        self.reference_lm = reference_lm if reference_lm is not None else lm
        self.sampler = Sampler(lm, rule)

    @property
    def reads_lengths_only(self) -> bool:
        """The plan reads the position only through its lengths when the cut rule does."""
        return bool(self.cut_rule.reads_lengths_only)

    def plan(self, source: Source, position: SequenceBatch) -> CutPlan:
        """Draw the cut of every chain: the first phase, before any token is generated (a cut law
        that reads more than lengths sees the sequence under this proposal's law)."""
        view = position if self.cut_rule.reads_lengths_only else under_law(position, self.sampler)
        cut_index, log_cut = self.cut_rule.sample(source, view, self.block_start)
        movable = torch.isfinite(log_cut).any(-1)
        cut_index = torch.where(movable, cut_index, position.lengths)  # no allowed cut: the identity move
        budget = torch.where(movable, self.max_new_tokens - cut_index, torch.zeros_like(cut_index))
        return CutPlan(cut_index, budget, torch.zeros_like(cut_index), (self.sampler,), log_cut, movable)

    def complete(self, position: SequenceBatch, plan: CutPlan, continuation: Continuation) -> Move:
        """The move once the new suffixes `continuation` (drawn from prompt + x_<m with at most
        `plan.max_new_tokens` tokens) are known: the last phase."""
        cut_index, log_cut, movable = plan.cut_index, plan.log_cut, plan.movable
        continuation = under_reference(self.lm, self.reference_lm, self.rule, position.contexts(cut_index), continuation)
        position = under_law(position, self.sampler)
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
        return Move(proposed, log_q_forward, log_q_backward, move_details(position, proposed, cut_index, continuation))

    def propose(self, source: Source, position: SequenceBatch) -> Move:
        return propose_suffix(self, source, position)

    def early_rejection(self, position: SequenceBatch, plan: CutPlan, alpha: float, log_u: torch.Tensor) -> EarlyStop | None:
        """The stop rule that rejects a proposal as soon as its move can no longer be accepted, for a
        target `alpha * sum_t log p` (log p from this proposal's LM); None where the bound does not hold.

        With q the tempered (and possibly truncated) law of p at temperature tau, a proposed token y
        adds `d = alpha log p(y) - log q(y) = (alpha - 1/tau) log p(y) + log Z`, Z = sum_{v kept}
        p(v)^(1/tau).  For 1/alpha <= tau <= 1 both terms are <= 0 (alpha - 1/tau >= 0 and log p <= 0;
        1/tau >= 1 so Z <= sum_v p(v) <= 1; truncation only shrinks Z), so the ratio's suffix sum
        only falls; the reverse cut term falls too when the cut rule gives `reverse_bound`.  Then
        the log ratio after t tokens is at most

            offset + sum_{s<t} d_s - weight log(base + t),
            offset = -alpha sum_{t>=m} log p(x_t) + sum_{t>=m} log q(x_t) - log P(m | x),

        and once that is below log u the move is rejected (docs/method.md).  Off (None) for
        tau outside [1/alpha, 1], alpha < 1, a target model other than the proposing LM, or a cut
        rule without `reverse_bound` (priority, entropy)."""
        tau = float(self.rule.temperature)
        if alpha is None or alpha < 1 or not (1.0 / alpha - 1e-12 <= tau <= 1.0) or self.reference_lm is not self.lm:
            return None
        reverse = self.cut_rule.reverse_bound(plan.cut_index, self.block_start)
        if reverse is None:
            return None
        current = under_law(position, self.sampler)
        cut_index = plan.cut_index
        offset = (-alpha * position.suffix_sum(position.log_p, cut_index) + current.suffix_sum(current.log_q, cut_index)
                  - _at(plan.log_cut, cut_index.clamp(max=position.capacity - 1)))
        threshold = log_u.to(offset) - offset - MARGIN
        threshold = torch.where(plan.movable & torch.isfinite(threshold), threshold, torch.full_like(threshold, -torch.inf))
        weight, base = reverse
        return EarlyStop(threshold, torch.full_like(threshold, float(alpha)), weight.to(threshold), base.to(threshold))


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
