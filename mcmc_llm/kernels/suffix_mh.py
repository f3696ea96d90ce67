"""Metropolis–Hastings with a two-phase suffix proposal: the kernel every power-sampler driver calls.

A step is `plan`, generation, `finish`:

    request = kernel.plan(source, state)          # the proposal's plan (cut, budget, samplers) and a stop rule
    continuation = <the driver generates request.plan's suffixes, stopping rows by request.stop>
    state, info = kernel.finish(source, state, request, continuation)

and `step(source, state)` runs the three in one call (lock-step drivers).  Drivers batch the
generation however they like (one batch, a continuously refilled one, pre-fetched) and call
nothing else, so a user's `SuffixProposal` runs in every driver.

**Exact early rejection.**  MH accepts iff `log u < log r` with u drawn from `source.split(ACCEPT)`.
The kernel draws that u in `plan`, before any token exists: the draw is counter-based, so it is
the very number `finish` would draw.  When the target is `alpha * sum log p` (`token_power`) and
the proposal can bound its ratio from above as it grows (`early_rejection`, derivation in
`SuffixResampling.early_rejection` and docs/method.md), `request.stop` tells the engine to stop
a row once the bound is below log u: that move is rejected whatever the rest of the suffix, so
the chain is the same chain, bit for bit, with fewer tokens.  `finish` rejects stopped rows; their
`log_accept_ratio` is the bound at the stop (an upper bound of the ratio the full proposal would
have had), and the info records `rejected_early` and `proposal_budget` (the tokens the proposal
could have drawn).  The pre-drawn u needs per-chain `Streams`; with a shared generator, and under
max-swap, early rejection is off.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from mcmc_llm.core.protocols import ACCEPT, PLAN, PROPOSE, TOKENS, SuffixProposal, Target
from mcmc_llm.core.random import Source, Streams, split, uniform
from mcmc_llm.kernels.mh import MetropolisHastings, MHInfo, MHState
from mcmc_llm.lm.early_stop import MARGIN, EarlyStop
from mcmc_llm.lm.generation import Continuation


class SuffixRequest(NamedTuple):
    """What a step asks the driver to generate: the proposal's `plan` and the rows' stop rule
    (`EarlyStop`, or None: run every row to EOS or its budget)."""

    plan: Any
    stop: EarlyStop | None


class SuffixMH:
    """MH kernel for sequence targets with a two-phase `SuffixProposal` (module docstring).

    rule: "metropolis" or "max_swap"; early_reject: stop proposals that are already rejected
    where that is exact (the proposal says so); False runs every proposal to its end."""

    def __init__(self, target: Target, proposal: SuffixProposal, *, rule: str = "metropolis", early_reject: bool = True):
        self.mh = MetropolisHastings(target, proposal, rule=rule)
        self.target, self.proposal = target, proposal
        power = getattr(target, "token_power", None)
        bounded = callable(getattr(proposal, "early_rejection", None))
        self.token_power = power if (early_reject and rule == "metropolis" and bounded) else None

    @property
    def reads_lengths_only(self) -> bool:
        """The proposal's `plan` reads the position only through its lengths (pre-fetching on acceptance)."""
        return bool(getattr(self.proposal, "reads_lengths_only", False))

    def init(self, position: Any) -> MHState:
        return self.mh.init(position)

    def plan(self, source: Source, state: MHState, *, early_reject: bool = True) -> SuffixRequest:
        """The first phase: the proposal's plan from `source.split(PROPOSE).split(PLAN)` and, where
        exact, the stop rule against `log u`, u the step's own accept uniform (`early_reject=False`:
        none, e.g. for a plan made for an assumed state)."""
        plan = self.proposal.plan(split(split(source, PROPOSE), PLAN), state.position)
        stop = None
        if early_reject and self.token_power is not None and isinstance(source, Streams):
            log_u = torch.log(uniform(split(source, ACCEPT), state.log_target))
            stop = self.proposal.early_rejection(state.position, plan, self.token_power, log_u)
        return SuffixRequest(plan, stop)

    def finish(self, source: Source, state: MHState, request: SuffixRequest, continuation: Continuation) -> tuple[MHState, MHInfo]:
        """The last phase: the move from the generated suffixes, then accept or reject with
        `source.split(ACCEPT)`; rows the engine stopped early are rejected (module docstring)."""
        move = self.proposal.complete(state.position, request.plan, continuation)
        stopped = continuation.stopped().to(state.log_target.device)
        budget = torch.as_tensor(request.plan.max_new_tokens).to(state.log_target.device)
        move = move._replace(details={**move.details, "rejected_early": stopped, "proposal_budget": budget})
        bound = None
        if request.stop is not None and bool(stopped.any()):
            log_u = torch.log(uniform(split(source, ACCEPT), state.log_target))
            bound = self._bound_at_stop(request.stop, continuation, log_u)
        return self.mh.decide(split(source, ACCEPT), state, move, rejected_early=stopped if bound is not None else None, bound=bound)

    def step(self, source: Source, state: MHState) -> tuple[MHState, MHInfo]:
        """plan, generate (one batch, `proposals.suffix.draw_suffixes`), finish."""
        from mcmc_llm.proposals.suffix import draw_suffixes  # the proposals room builds on the kernels room

        request = self.plan(source, state)
        tokens = split(split(source, PROPOSE), TOKENS)
        continuation = draw_suffixes(state.position, request.plan, tokens, stop=request.stop)
        return self.finish(source, state, request, continuation)

    @staticmethod
    def _bound_at_stop(stop: EarlyStop, continuation: Continuation, log_u: torch.Tensor) -> torch.Tensor:
        """The ratio's upper bound where each row stopped: `offset + sum_s (alpha log p - log q) -
        weight log(base + t)`, with `offset = log u - MARGIN - threshold` (`EarlyStop`)."""
        stop = EarlyStop(*(value.to(log_u) for value in stop))
        drawn = continuation.tokens.lengths.to(log_u.device)
        inside = torch.arange(continuation.log_p.shape[1], device=log_u.device)[None] < drawn[:, None]
        increments = stop.alpha[:, None] * continuation.log_p.to(log_u) - continuation.log_q.to(log_u)
        score = torch.where(inside, increments, torch.zeros_like(increments)).sum(-1)
        return (log_u - MARGIN - stop.threshold) + stop.bound(score, drawn)


__all__ = ["SuffixMH", "SuffixRequest"]
