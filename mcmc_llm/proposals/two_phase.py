"""A base class for two-phase suffix proposals whose sampler is a function of the cut.

A subclass says two things: the cut law `P(m | x)` (a `CutRule`, `mcmc_llm.proposals.cut_rules`)
and which of its `samplers` draws the suffix after a cut m, `s(m) = sampler_for(m)`.  The base
class writes `plan` and `complete` (`mcmc_llm.core.protocols.SuffixProposal`) with the move

    log q(x' | x) = log P(m | x)  + sum_{t=m}^{L'-1} log p_s(m)(x'_t | x'_<t)
    log q(x | x') = log P(m | x') + sum_{t=m}^{L-1}  log p_s(m)(x_t  | x_<t)

which is exact because m is an auxiliary variable the reverse move reuses and s(m) depends on m
alone (x and x' share it):

* the forward sum is read from the tokens' `log_q` as the sampler that drew them reported it;
* the backward sum is under s(m), whatever drew x's suffix (an extension, another sampler, another
  component of a mixture): x is re-scored under s(m) where its cached `log_q_law` differs
  (`under_law`);
* `P(m | x')` is the cut rule evaluated at the proposal; a rule that reads more than lengths sees
  every sequence under one fixed law, `samplers[0]`'s, so that `P(m | x)` is a function of x alone;
* a row with no allowed cut makes the identity move (budget 0, both terms 0);
* tokens drawn by a sampler whose LM is not `reference_lm` (the model whose `log p` the position
  caches, the target's) get their `log p` and entropy from `reference_lm`.

Chain identity across drivers: the plan is a `CutPlan` whose `samplers` is the proposal's own tuple
(`mcmc_llm.proposals.plans` keeps it, and the indices, when plans of several calls are batched),
`complete` reads row c's sampler as `plan.samplers[plan.sampler_index[c]]`, and every row is
treated independently.  `reads_lengths_only` is the cut rule's: `sampler_for` reads only m.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from mcmc_llm.core.protocols import Move, Sampler
from mcmc_llm.core.random import Source
from mcmc_llm.core.tree import gather_chains, scatter_chains
from mcmc_llm.lm.generation import Continuation
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.cut_rules import CutRule, resolve_cut_rule
from mcmc_llm.proposals.suffix_moves import CutPlan, move_details, propose_suffix, rows_by_lm, rows_by_sampler, under_law, under_reference, value_at


class TwoPhaseSuffixProposal:
    """Suffix resampling on S_n (n = `max_new_tokens`) cut by `cut_rule`, the suffix after cut m drawn
    by `samplers[sampler_for(m)]` (module docstring).

    reference_lm: the model whose per-token `log p` the position caches (the target's LM).
    samplers: a `Sampler(lm, rule)` or a sequence of them; every LM must share `reference_lm`'s
        vocabulary and EOS tokens.
    cut_rule: a `CutRule` object or a registry name ("uniform", "within-block", ...).
    block_start: first position of the current block (`Stage.block_start`).

    Override `sampler_for(cut_index) -> [C]` (default: all 0) to choose the sampler by the cut.
    """

    def __init__(
        self,
        reference_lm: LanguageModel,
        samplers: Sampler | Sequence[Sampler],
        cut_rule: CutRule | str,
        max_new_tokens: int,
        *,
        block_start: int = 0,
    ):
        if block_start < 0 or block_start >= max_new_tokens:
            raise ValueError(f"block_start must be in [0, max_new_tokens={max_new_tokens}), got {block_start}")
        samplers = (samplers,) if isinstance(samplers, Sampler) else tuple(samplers)
        if not samplers or not all(isinstance(sampler, Sampler) for sampler in samplers):
            raise ValueError(f"samplers must be one Sampler(lm, rule) or a non-empty sequence of them, got {samplers!r}")
        for sampler in samplers:
            if sampler.lm.vocab_size != reference_lm.vocab_size or tuple(sampler.lm.eos_token_ids) != tuple(reference_lm.eos_token_ids):
                raise ValueError(f"every sampler's LM must share the reference LM's vocabulary ({reference_lm.vocab_size} tokens) "
                                 f"and EOS tokens {tuple(reference_lm.eos_token_ids)}; got {sampler.lm.vocab_size} tokens, "
                                 f"EOS {tuple(sampler.lm.eos_token_ids)}")
        self.reference_lm = reference_lm
        self.samplers = samplers
        self.cut_rule = resolve_cut_rule(cut_rule)
        self.max_new_tokens = max_new_tokens
        self.block_start = block_start

    @property
    def reads_lengths_only(self) -> bool:
        """The plan reads the position only through its lengths when the cut rule does."""
        return bool(self.cut_rule.reads_lengths_only)

    def sampler_for(self, cut_index: torch.Tensor) -> torch.Tensor:
        """Index into `samplers` of the sampler that draws the suffix after each chain's cut, [C]; a
        function of the cut (and of the stage) only.  Default: the first sampler."""
        return torch.zeros_like(cut_index)

    def cut_view(self, position: SequenceBatch) -> SequenceBatch:
        """What the cut law reads: the position itself for a length-only rule, else every sequence's
        `log_q` under `samplers[0]`'s law."""
        return position if self.cut_rule.reads_lengths_only else under_law(position, self.samplers[0])

    def plan(self, source: Source, position: SequenceBatch) -> CutPlan:
        """Phase 1: draw every chain's cut from `source` and name its sampler and budget."""
        cut_index, log_cut = self.cut_rule.sample(source, self.cut_view(position), self.block_start)
        movable = torch.isfinite(log_cut).any(-1)
        cut_index = torch.where(movable, cut_index, position.lengths)  # no allowed cut: the identity move
        budget = torch.where(movable, self.max_new_tokens - cut_index, torch.zeros_like(cut_index))
        sampler_index = torch.as_tensor(self.sampler_for(cut_index), dtype=torch.long, device=cut_index.device)
        if sampler_index.shape != cut_index.shape or bool(((sampler_index < 0) | (sampler_index >= len(self.samplers))).any()):
            raise ValueError(f"{type(self).__name__}.sampler_for must give one index in [0, {len(self.samplers)}) per chain, "
                             f"got {sampler_index.tolist()}")
        return CutPlan(cut_index, budget, sampler_index, self.samplers, log_cut, movable)

    def under_samplers(self, position: SequenceBatch, plan: CutPlan) -> SequenceBatch:
        """`position` with row c's `log_q` under its planned sampler's law (`under_law`), so that its
        suffix sum is the reverse move's `sum_{t>=m} log p_s(m)(x_t | x_<t)`."""
        groups = rows_by_sampler(plan.samplers, plan.sampler_index)
        if len(groups) == 1:
            return under_law(position, groups[0][0])
        for sampler, rows in groups:
            rows = rows.to(plan.sampler_index.device)
            position = scatter_chains(position, rows, under_law(gather_chains(position, rows), sampler))
        return position

    def under_reference(self, position: SequenceBatch, plan: CutPlan, continuation: Continuation) -> Continuation:
        """`continuation` with `log_p` and entropy from `reference_lm` on the rows another LM drew."""
        contexts = position.contexts(plan.cut_index)
        if len(plan.samplers) == 1:
            sampler = plan.samplers[0]
            return under_reference(sampler.lm, self.reference_lm, sampler.rule, contexts, continuation)
        log_p, entropy = continuation.log_p.clone(), continuation.entropy.clone()
        for lm, rows in rows_by_lm(plan.samplers, plan.sampler_index):
            rows = rows.to(log_p.device)
            rule = plan.samplers[int(plan.sampler_index[rows[0]])].rule  # log p and entropy do not depend on it
            part = under_reference(lm, self.reference_lm, rule, gather_chains(contexts, rows), gather_chains(continuation, rows))
            width = part.log_p.shape[1]
            log_p[rows, :width], entropy[rows, :width] = part.log_p.to(log_p), part.entropy.to(entropy)
        return dataclasses.replace(continuation, log_p=log_p, entropy=entropy)

    def complete(self, position: SequenceBatch, plan: CutPlan, continuation: Continuation) -> Move:
        """Phase 3: x' from the drawn suffixes, and both log q terms (module docstring)."""
        cut_index, movable = plan.cut_index, plan.movable
        continuation = self.under_reference(position, plan, continuation)
        current = self.under_samplers(position, plan)
        proposed = current.splice(cut_index, continuation)
        safe_index = cut_index.clamp(max=position.capacity - 1)
        zero = torch.zeros_like(position.log_q[:, 0])
        reverse_cut = self.cut_rule.log_probs(self.cut_view(proposed), self.block_start)  # P(m | x')
        forward = value_at(plan.log_cut, safe_index) + proposed.suffix_sum(proposed.log_q, cut_index)
        backward = value_at(reverse_cut, safe_index) + current.suffix_sum(current.log_q, cut_index)
        details = move_details(current, proposed, cut_index, continuation)
        if len(self.samplers) > 1:
            details["sampler_index"] = plan.sampler_index
        return Move(proposed, torch.where(movable, forward, zero), torch.where(movable, backward, zero), details)

    def propose(self, source: Source, position: SequenceBatch) -> Move:
        """The three phases in one call (`MetropolisHastings.step`, the lock-step driver, `run_chains`)."""
        return propose_suffix(self, source, position)
