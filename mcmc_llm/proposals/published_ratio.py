"""The published reference code's acceptance ratio, kept as a known-biased comparison.

The reference implementation of Karan & Du computes, for a cut m and a proposal of length L'
against a current sequence of length L,

    log A_pub = alpha [sum_{t=m}^{L'-1} log p(x'_t) - sum_{t=m}^{min(L,L')-1} log p(x_t)]
              + sum_{t=m}^{min(L,L')-1} log p_prop(x_t) - sum_{t=m}^{L'-1} log p_prop(x'_t)

i.e. it truncates the current suffix to the proposal's length and drops the cut-index term
`log P(m|x') - log P(m|x)`.  Length-changing moves are then not reversible and the chain does
not target p^alpha (METHOD §6).  `PublishedRatioSuffix` reproduces that ratio inside our MH
kernel by reporting a backward term that cancels the parts the published code leaves out:

    log q_backward := sum_{t=m}^{min(L,L')-1} log p_prop(x_t) + alpha sum_{t=min(L,L')}^{L-1} log p(x_t)

so that the kernel's `alpha [log p(x') - log p(x)] + log q_backward - log q_forward` equals
`log A_pub`.  Use it only in studies and in tests that must detect it.
"""

from __future__ import annotations

import torch

from mcmc_llm.core.protocols import Move
from mcmc_llm.lm.generation import Continuation
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.suffix import CutPlan, SuffixResampling


def _window_sum(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(values.shape[1], device=values.device)[None]
    inside = (positions >= low[:, None]) & (positions < high[:, None])
    return torch.where(inside, values, torch.zeros_like(values)).sum(-1)


class PublishedRatioSuffix(SuffixResampling):
    """Suffix resampling whose MH ratio is the published code's (biased); `alpha` is the target's."""

    def __init__(self, *args, alpha: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = alpha

    def complete(self, position: SequenceBatch, plan: CutPlan, continuation: Continuation) -> Move:
        move = super().complete(position, plan, continuation)
        proposed: SequenceBatch = move.position
        cut = move.details["cut_index"]
        shared_end = torch.minimum(position.lengths, proposed.lengths)
        log_q_forward = proposed.suffix_sum(proposed.log_q, cut)
        log_q_backward = _window_sum(position.log_q, cut, shared_end) + self.alpha * _window_sum(
            position.log_p, shared_end, position.lengths
        )
        return Move(proposed, log_q_forward, log_q_backward, move.details)
