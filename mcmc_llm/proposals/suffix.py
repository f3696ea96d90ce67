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
(priority cuts) are evaluated, so both are functions of the sequence alone.  The new suffix's `log p` and
`log p_prop` come from the same forward pass that sampled it.  If the target's reference model differs from the proposal LM (`reference_lm`),
the new suffix is scored under it too.

`SuffixResampling` is the two-phase proposal (`mcmc_llm.proposals.two_phase`) with one sampler:
`plan` draws the cut, a driver generates the suffixes, `complete` builds the `Move`.  `propose`
runs the three phases in one call, for lock-step kernels.  It adds `early_rejection`.  The helpers
suffix moves are built from (`under_law`, `suffix_log_q`, `draw_suffixes`, `propose_suffix`, ...)
live in `mcmc_llm.proposals.suffix_moves` and are importable from here too.
"""

from __future__ import annotations

import torch

from mcmc_llm.core.protocols import Sampler
from mcmc_llm.lm.early_stop import MARGIN, EarlyStop
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.cut_rules import CutRule
from mcmc_llm.proposals.suffix_moves import (
    CutPlan, draw_suffixes, move_details, propose_suffix, rows_by_lm, suffix_log_q, under_law, under_reference, value_at,
)
from mcmc_llm.proposals.two_phase import TwoPhaseSuffixProposal

__all__ = [
    "CutPlan", "SuffixResampling", "draw_suffixes", "move_details", "propose_suffix", "rows_by_lm", "suffix_log_q",
    "under_law", "under_reference",
]


class SuffixResampling(TwoPhaseSuffixProposal):
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
        self.lm, self.rule, self.sampler = lm, rule, Sampler(lm, rule)
        reference_lm = reference_lm if reference_lm is not None else lm
        super().__init__(reference_lm, self.sampler, cut_rule, max_new_tokens, block_start=block_start)

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
                  - value_at(plan.log_cut, cut_index.clamp(max=position.capacity - 1)))
        threshold = log_u.to(offset) - offset - MARGIN
        threshold = torch.where(plan.movable & torch.isfinite(threshold), threshold, torch.full_like(threshold, -torch.inf))
        weight, base = reverse
        return EarlyStop(threshold, torch.full_like(threshold, float(alpha)), weight.to(threshold), base.to(threshold))
