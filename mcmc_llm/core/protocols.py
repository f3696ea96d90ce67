"""The three pieces every sampler is made of.

* A **Target** is an unnormalised log-density `log pi(x)`, batched over chains: it maps a
  position holding C chains to a float tensor of shape [C].
* A **Proposal** draws a move `x -> x'` and reports `log q(x' | x)` (forward) and
  `log q(x | x')` (backward), including any auxiliary choice such as a cut index.
  It does not decide acceptance: calibration belongs to the kernel that wraps it.
* A **Kernel** has `init(position) -> state` and `step(source, state) -> (state, info)`.
  States and infos are small immutable records; randomness comes only from the explicit source
  (per-chain `Streams` or a shared `torch.Generator`, `mcmc_llm.core.random`).
* A **SuffixProposal** is a proposal over token sequences in two phases, so that a driver can
  batch the generation of many chains' proposals however it likes (lock-step, a continuously
  refilled batch, pre-fetched): `plan(source, position)` draws what to keep (a cut index per
  chain) and says what to generate (a budget and a `Sampler` per chain); the driver generates
  the suffixes; `complete(position, plan, continuation)` turns them into a `Move` with both log q
  terms.  Drivers call nothing else, so a user's suffix proposal runs in every driver.

Random-stream labels.  A kernel step given source s draws its proposal from `s.split(PROPOSE)`
(the plan from `.split(PLAN)`, the suffix tokens from `.split(TOKENS)`, token t of a row from
`.split(t)` of its stream) and its accept/reject uniform from `s.split(ACCEPT)`; every driver uses
these labels, which is why lock-step and asynchronous chains draw identical chains.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Protocol, runtime_checkable

import torch

PROPOSE, PLAN, TOKENS, ACCEPT = "propose", "plan", "tokens", "accept"


@runtime_checkable
class Target(Protocol):
    """Unnormalised log-density over positions batched on the first axis."""

    def log_prob(self, position: Any) -> torch.Tensor:
        """Return `log pi(x_c)` for every chain c, shape [C]."""
        ...


class Move(NamedTuple):
    """A proposed move for every chain.

    position: the proposed positions x'.
    log_q_forward: log q(x' | x), shape [C].
    log_q_backward: log q(x | x'), shape [C].
    details: proposal-specific per-chain diagnostics (cut index, tokens resampled, ...), each [C].
    target_log_prob: optional `log pi(x')` if the proposal computed it as a by-product
        (e.g. from the same forward pass that sampled x'); None means the kernel asks the target.
    """

    position: Any
    log_q_forward: torch.Tensor
    log_q_backward: torch.Tensor
    details: Mapping[str, torch.Tensor] = {}
    target_log_prob: torch.Tensor | None = None


@runtime_checkable
class Proposal(Protocol):
    """Draws `x' ~ q(. | x)` for every chain and reports both directions' log-probabilities."""

    def propose(self, source: Any, position: Any) -> Move:
        ...


class Sampler(NamedTuple):
    """How a suffix is generated: the LM that draws it and its `SamplingRule` (temperature, top-k, top-p)."""

    lm: Any
    rule: Any


@runtime_checkable
class SuffixPlan(Protocol):
    """What a suffix proposal's `plan` returns: a chain-batched record (a frozen dataclass or
    NamedTuple of [C, ...] tensors, which drivers gather and scatter by chain) with at least

    cut_index [C]: keep the generated tokens x_<m, m = cut_index;
    max_new_tokens [C]: the most tokens to generate after them (0: nothing);
    sampler_index [C] and samplers (a tuple of `Sampler`): chain c's suffix is drawn by
        `samplers[sampler_index[c]]` (one sampler for all rows, one per row, or anything between).
    Anything else on it is the proposal's own (e.g. the cut law, a mixture component).

    A driver may hand `complete` rows of several `plan` calls as one plan; it builds that plan with
    `mcmc_llm.proposals.plans`, so `samplers[sampler_index[c]]` stays row c's own sampler, a shared
    tuple keeps its indices, and a plan with one sampler per row keeps one per row."""

    cut_index: torch.Tensor
    max_new_tokens: torch.Tensor
    sampler_index: torch.Tensor
    samplers: tuple


@runtime_checkable
class SuffixProposal(Protocol):
    """A two-phase proposal on token sequences (module docstring).

    reads_lengths_only: True when `plan` reads the position only through its lengths (then a
        driver may plan step j+1 for an assumed length before step j's outcome is known).
    """

    reads_lengths_only: bool

    def plan(self, source: Any, position: Any) -> SuffixPlan:
        ...

    def complete(self, position: Any, plan: SuffixPlan, continuation: Any) -> Move:
        ...


@runtime_checkable
class Kernel(Protocol):
    """A Markov kernel with explicit state and randomness: `state = init(position)`, then
    `state, info = step(source, state)` draws the next state from K(state, .).

    source: where the step's random numbers come from: per-chain `Streams` (one counter-based
        stream per chain; the step derives sub-streams for each draw) or a shared
        `torch.Generator` (`mcmc_llm.core.random.Source`).
    """

    def init(self, position: Any) -> Any:
        ...

    def step(self, source: Any, state: Any) -> tuple[Any, Any]:
        ...
