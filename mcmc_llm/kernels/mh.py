"""Metropolis–Hastings: the one accept/reject rule that every proposal in mcmc_llm goes through.

For a target `pi` and a proposal `q`, a move `x -> x'` is accepted with probability

    A(x, x') = min(1, pi(x') q(x | x') / (pi(x) q(x' | x))).

Only ratios of `pi` are used, so normalising constants cancel.  The `max_swap` rule is the
`alpha -> inf` limit of MH on `pi^alpha`: accept iff `log pi(x') > log pi(x)`.
The `ignore_hastings_correction` flag exists only to build deliberately wrong samplers in tests
and studies (it drops the `q` terms, which is wrong for asymmetric proposals).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import torch

from mcmc_llm.core.protocols import ACCEPT, PROPOSE, Move, Proposal, Target
from mcmc_llm.core.random import Source, split, uniform
from mcmc_llm.core.tree import num_chains, select

ACCEPTANCE_RULES = ("metropolis", "max_swap")


class MHState(NamedTuple):
    """Current positions and their target log-densities (shape [C])."""

    position: Any
    log_target: torch.Tensor


class MHInfo(NamedTuple):
    """What one MH step did, per chain.

    accepted: bool [C].  log_accept_ratio: `log pi(x') - log pi(x) + log q(x|x') - log q(x'|x)`.
    acceptance_probability: `min(1, exp(log_accept_ratio))` (0/1 under max-swap).
    proposal: the proposal's own per-chain details (cut index, tokens resampled, ...).
    """

    accepted: torch.Tensor
    log_accept_ratio: torch.Tensor
    acceptance_probability: torch.Tensor
    proposal: Mapping[str, torch.Tensor]


def log_acceptance_ratio(
    log_target_current: torch.Tensor,
    log_target_proposed: torch.Tensor,
    log_q_forward: torch.Tensor,
    log_q_backward: torch.Tensor,
) -> torch.Tensor:
    """`log [pi(x') q(x|x')] - log [pi(x) q(x'|x)]`, with `-inf` for proposals outside the support."""
    log_ratio = (log_target_proposed - log_target_current) + (log_q_backward - log_q_forward)
    impossible = torch.isneginf(log_target_proposed) | torch.isneginf(log_q_backward)
    return torch.where(impossible, torch.full_like(log_ratio, -torch.inf), log_ratio)


def _check_per_chain(shape: torch.Size, **values: torch.Tensor) -> None:
    """Each value must broadcast to one number per chain (`shape` = (C,)) without changing that shape.

    Without this check a [C, 1] log-probability would broadcast against [C] into a [C, C] ratio and
    silently scramble the chains.
    """
    for name, value in values.items():
        try:
            broadcast = torch.broadcast_shapes(value.shape, shape)
        except RuntimeError:
            broadcast = None
        if broadcast != shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}; expected {tuple(shape)}, one value per chain"
            )


class MetropolisHastings:
    """MH kernel around any target and proposal.

    >>> kernel = MetropolisHastings(target, proposal)
    >>> state = kernel.init(position)
    >>> state, info = kernel.step(source, state)   # per-chain Streams or a torch.Generator

    A step proposes from `source.split(PROPOSE)` and draws its uniforms from `source.split(ACCEPT)`.
    """

    def __init__(
        self,
        target: Target,
        proposal: Proposal,
        *,
        rule: str = "metropolis",
        ignore_hastings_correction: bool = False,
    ):
        if rule not in ACCEPTANCE_RULES:
            raise ValueError(f"unknown acceptance rule {rule!r}; allowed: {', '.join(ACCEPTANCE_RULES)}")
        self.target = target
        self.proposal = proposal
        self.rule = rule
        self.ignore_hastings_correction = ignore_hastings_correction

    def init(self, position: Any) -> MHState:
        """Evaluate the target at the initial positions; every chain must have finite density."""
        chains = num_chains(position)
        log_target = torch.as_tensor(self.target.log_prob(position))
        if log_target.shape != (chains,):
            raise ValueError(
                f"target.log_prob returned shape {tuple(log_target.shape)}; expected ({chains},), one value per chain"
            )
        bad = ~torch.isfinite(log_target)
        if bool(bad.any()):
            index = int(bad.nonzero()[0])
            raise ValueError(
                f"the target log-density is {float(log_target[index])} at the initial position of chain {index}; "
                "every chain must start where the log-density is finite"
            )
        return MHState(position, log_target)

    def step(self, source: Source, state: MHState) -> tuple[MHState, MHInfo]:
        move = self.proposal.propose(split(source, PROPOSE), state.position)
        return self.decide(split(source, ACCEPT), state, move)

    def decide(
        self, source: Source, state: MHState, move: Move, *, rejected_early: torch.Tensor | None = None, bound: torch.Tensor | None = None
    ) -> tuple[MHState, MHInfo]:
        """Accept or reject a proposed `move` from `state`, chain by chain, with uniforms from
        `source` (the second half of `step`, which passes `source.split(ACCEPT)`; a driver that
        generates proposals itself calls it when a chain's move is ready).  `rejected_early` [C]:
        rows whose proposal was stopped because its ratio's upper bound `bound` [C] was already
        below log u (`kernels.suffix_mh`); they are rejected and report `bound` as their ratio."""
        log_target_proposed = move.target_log_prob
        if log_target_proposed is None:
            log_target_proposed = self.target.log_prob(move.position)
        log_target_proposed = torch.as_tensor(log_target_proposed, dtype=state.log_target.dtype)
        log_q_forward, log_q_backward = move.log_q_forward, move.log_q_backward
        _check_per_chain(
            state.log_target.shape,
            log_target_proposed=log_target_proposed,
            log_q_forward=torch.as_tensor(log_q_forward),
            log_q_backward=torch.as_tensor(log_q_backward),
        )
        if self.ignore_hastings_correction:
            log_q_forward = log_q_backward = torch.zeros_like(state.log_target)
        log_ratio = log_acceptance_ratio(
            state.log_target, log_target_proposed, log_q_forward.to(state.log_target), log_q_backward.to(state.log_target)
        )
        if rejected_early is not None:
            log_ratio = torch.where(rejected_early, bound.to(log_ratio), log_ratio)
        if self.rule == "max_swap":
            accepted = log_target_proposed > state.log_target
            acceptance_probability = accepted.to(log_ratio.dtype)
        else:
            acceptance_probability = torch.exp(torch.clamp(log_ratio, max=0.0))
            accepted = torch.log(uniform(source, log_ratio)) < log_ratio
            if rejected_early is not None:
                accepted = accepted & ~rejected_early
        new_state = MHState(
            select(accepted, move.position, state.position),
            torch.where(accepted, log_target_proposed, state.log_target),
        )
        return new_state, MHInfo(accepted, log_ratio, acceptance_probability, dict(move.details))
