"""A random choice among suffix proposals, as one two-phase suffix proposal.

Chain c picks component i with probability w_i (independently of its position), and that
component proposes.  Treating the choice as an auxiliary variable whose reverse move uses the
same component, the move's log q terms are the component's own:

    log q(x', i | x) = log w_i + log q_i(x' | x),     log q(x, i | x') = log w_i + log q_i(x | x'),

and `log w_i` cancels in the ratio, so MH with this proposal leaves the target invariant whenever
each component's terms are exact.  Each component computes its backward term under its own
law (`under_law` re-scores sequences holding tokens another component drew), which is what makes mixtures of
kernels with different temperatures, truncations or cut rules exact.

Unlike the `Mixture` kernel (`mcmc_llm.kernels.compose`), which runs whole kernels on sub-batches,
this is a proposal, so it runs in every driver of `power_sample`, asynchronous chains included.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from mcmc_llm.core.protocols import Move, SuffixProposal
from mcmc_llm.core.random import Source, categorical, split
from mcmc_llm.core.tree import gather_chains, scatter_chains
from mcmc_llm.proposals.suffix import propose_suffix


@dataclasses.dataclass(frozen=True)
class MixturePlan:
    """Every component's plan for every chain (`parts`) and the component each chain uses; the
    `SuffixPlan` fields are the chosen component's, with sampler indices into the concatenated
    `samplers`."""

    cut_index: torch.Tensor
    max_new_tokens: torch.Tensor
    sampler_index: torch.Tensor
    samplers: tuple
    component: torch.Tensor
    parts: tuple


class MixtureProposal:
    """Per-chain random choice among suffix proposals with the given weights (normalised here)."""

    def __init__(self, proposals: Sequence[SuffixProposal], weights: Sequence[float] | None = None):
        self.proposals = list(proposals)
        if not self.proposals:
            raise ValueError("a mixture needs at least one proposal, got none")
        for index, proposal in enumerate(self.proposals):
            if not isinstance(proposal, SuffixProposal):
                raise TypeError(f"proposal {index} ({type(proposal).__name__}) is not a two-phase suffix proposal (plan/complete)")
        weights = torch.as_tensor([1.0] * len(self.proposals) if weights is None else list(weights), dtype=torch.float64)
        if weights.shape != (len(self.proposals),):
            raise ValueError(f"got {weights.numel()} weights for {len(self.proposals)} proposals; they must match")
        if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()) or float(weights.sum()) <= 0:
            raise ValueError(f"mixture weights must be finite, non-negative and not all zero, got {weights.tolist()}")
        self.log_weights = torch.log(weights / weights.sum())

    @property
    def reads_lengths_only(self) -> bool:
        return all(bool(proposal.reads_lengths_only) for proposal in self.proposals)

    def plan(self, source: Source, position) -> MixturePlan:
        chains = position.num_chains
        component = categorical(split(source, "component"), self.log_weights.expand(chains, -1)).to(position.lengths.device)
        parts = tuple(proposal.plan(split(source, index), position) for index, proposal in enumerate(self.proposals))
        samplers, offsets = (), []
        for part in parts:
            offsets.append(len(samplers))
            samplers += tuple(part.samplers)
        pick = lambda name, shift=False: torch.stack(  # noqa: E731 - the chosen component's field, per chain
            [getattr(part, name) + (offsets[i] if shift else 0) for i, part in enumerate(parts)], dim=-1
        ).gather(1, component[:, None]).squeeze(1)
        return MixturePlan(pick("cut_index"), pick("max_new_tokens"), pick("sampler_index", shift=True), samplers, component, parts)

    def propose(self, source: Source, position) -> Move:
        return propose_suffix(self, source, position)

    def complete(self, position, plan: MixturePlan, continuation) -> Move:
        chains = position.num_chains
        proposed = position  # every chain's row is overwritten by its component's proposal
        forward = torch.zeros(chains, dtype=torch.float64, device=position.lengths.device)
        backward = forward.clone()
        details: dict[str, torch.Tensor] = {}
        for index, proposal in enumerate(self.proposals):
            rows = (plan.component == index).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            part = proposal.complete(gather_chains(position, rows), gather_chains(plan.parts[index], rows), gather_chains(continuation, rows))
            proposed = scatter_chains(proposed, rows, part.position)
            forward[rows], backward[rows] = part.log_q_forward.to(forward), part.log_q_backward.to(backward)
            for name, value in part.details.items():  # details a component lacks stay NaN
                details.setdefault(name, torch.full((chains,), torch.nan, dtype=torch.float64))[rows.cpu()] = value.to(torch.float64).cpu()
        details["component"] = plan.component
        return Move(proposed, forward, backward, details)
