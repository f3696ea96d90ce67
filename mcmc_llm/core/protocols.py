"""The three pieces every sampler is made of.

* A **Target** is an unnormalised log-density `log pi(x)`, batched over chains: it maps a
  position holding C chains to a float tensor of shape [C].
* A **Proposal** draws a move `x -> x'` and reports `log q(x' | x)` (forward) and
  `log q(x | x')` (backward), including any auxiliary choice such as a cut index.
  It does not decide acceptance: calibration belongs to the kernel that wraps it.
* A **Kernel** has `init(position) -> state` and `step(generator, state) -> (state, info)`.
  States and infos are small immutable records; randomness comes only from the explicit
  `torch.Generator`.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Protocol, runtime_checkable

import torch


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

    def propose(self, generator: torch.Generator, position: Any) -> Move:
        ...


@runtime_checkable
class Kernel(Protocol):
    """A Markov kernel with explicit state and randomness."""

    def init(self, position: Any) -> Any:
        ...

    def step(self, generator: torch.Generator, state: Any) -> tuple[Any, Any]:
        ...
