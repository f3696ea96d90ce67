"""A per-request stop rule for the generation engine: stop a proposal that is already rejected.

For a suffix move whose log acceptance ratio can only fall as the proposal grows
(`mcmc_llm.proposals.suffix.SuffixResampling.early_rejection`, derivation in docs/method.md), the
ratio after t proposed tokens y_m .. y_{m+t-1} is bounded above by

    B_t = offset + sum_{s<t} (alpha log p(y_s) - log q(y_s)) - weight * log(base + t),

(`offset`: the terms of the current sequence x, fixed once the cut is drawn; the last term bounds
the reverse cut probability `log P(m | y)` for any y with at least m + t tokens).  With the
chain's accept uniform u drawn before decoding, a row whose bound falls to `threshold = log u -
offset - margin` is rejected whatever it would draw next; the engine stops it there, frees its
row and reports it as `Continuation.stopped_early`.  The margin (`MARGIN`) absorbs floating-point
rounding between this running sum and the ratio the kernel computes at the end, so a stopped
row is one whose final ratio would have been below log u: the chain is the same, bit for bit.

`threshold = -inf` means "never stop" (rows without the rule)."""

from __future__ import annotations

from typing import NamedTuple

import torch

MARGIN = 1e-6  # nats: far above float64 rounding of sums of a few thousand terms, far below any ratio that matters


class EarlyStop(NamedTuple):
    """Per-row stop rule (module docstring), each field [R] float64."""

    threshold: torch.Tensor
    alpha: torch.Tensor
    weight: torch.Tensor
    base: torch.Tensor

    @staticmethod
    def never(rows: int, device=None) -> "EarlyStop":
        """The rule of rows that never stop early."""
        zeros = torch.zeros(rows, dtype=torch.float64, device=device)
        return EarlyStop(torch.full_like(zeros, -torch.inf), zeros, zeros, zeros + 1.0)

    def bound(self, score: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """`score - weight * log(base + drawn)`, the running bound less `offset`, [R]."""
        return score - self.weight * torch.log(self.base + drawn.to(torch.float64))

    def increments(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """`alpha log p - log q` of one drawn token per row, [R] (meaningless, and harmless, for rows
        that never stop: nothing is below their threshold -inf)."""
        return self.alpha * log_p - log_q

    def stops(self, score: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """Rows whose bound after `drawn` tokens is below their threshold, [R] bool."""
        return self.bound(score, drawn) < self.threshold


__all__ = ["EarlyStop", "MARGIN"]
