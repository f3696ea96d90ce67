"""Composition of kernels that share a state type.

* `Cycle(k1, k2, ...)`: one step applies every kernel in turn (a deterministic scan).
  If each kernel leaves `pi` invariant, so does their composition.
* `Mixture([k1, k2, ...], weights)`: each chain independently picks kernel i with probability
  `w_i` at every step (a random scan).  A mixture of `pi`-invariant kernels is `pi`-invariant.
  Each component is run only on the chains that picked it.

With per-chain `Streams`, kernel i of a cycle draws from `source.split(i)`; a mixture draws its
choice from `source.split("component")` and runs kernel i from `source.split(i)` on the chains
that chose it, so every chain's draws are its own.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch

from mcmc_llm.core.protocols import Kernel
from mcmc_llm.core.random import Source, categorical, gather, split
from mcmc_llm.core.tree import flatten_info, gather_chains, num_chains, scatter_chains


class CycleInfo(NamedTuple):
    """Infos of each kernel of the cycle, in order."""

    infos: tuple


class MixtureInfo(NamedTuple):
    """Which kernel each chain used (`kernel_index`, [C]) and that kernel's info, merged over chains."""

    kernel_index: torch.Tensor
    info: Any


def _check_kernels(kernels: Sequence[Kernel]) -> list[Kernel]:
    kernels = list(kernels)
    if not kernels:
        raise ValueError("a composition needs at least one kernel, got none")
    for index, kernel in enumerate(kernels):
        if not (hasattr(kernel, "init") and hasattr(kernel, "step")):
            raise TypeError(f"kernel {index} ({type(kernel).__name__}) has no init/step methods")
    return kernels


class Cycle:
    """Apply kernels one after another; `init` is the first kernel's."""

    def __init__(self, *kernels: Kernel):
        self.kernels = _check_kernels(kernels)

    def init(self, position: Any) -> Any:
        return self.kernels[0].init(position)

    def step(self, source: Source, state: Any) -> tuple[Any, CycleInfo]:
        infos = []
        for index, kernel in enumerate(self.kernels):
            state, info = kernel.step(split(source, index), state)
            infos.append(info)
        return state, CycleInfo(tuple(infos))


class Mixture:
    """Per-chain random choice among kernels with the given weights (normalised here)."""

    def __init__(self, kernels: Sequence[Kernel], weights: Sequence[float] | None = None):
        self.kernels = _check_kernels(kernels)
        if weights is None:
            weights = [1.0] * len(self.kernels)
        weights = torch.as_tensor(list(weights), dtype=torch.float64)
        if weights.shape != (len(self.kernels),):
            raise ValueError(f"got {weights.numel()} weights for {len(self.kernels)} kernels; they must match")
        if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()) or float(weights.sum()) <= 0:
            raise ValueError(f"mixture weights must be finite, non-negative and not all zero, got {weights.tolist()}")
        self.log_weights = torch.log(weights / weights.sum())

    def init(self, position: Any) -> Any:
        return self.kernels[0].init(position)

    def step(self, source: Source, state: Any) -> tuple[Any, MixtureInfo]:
        chains = num_chains(state)
        choice = categorical(split(source, "component"), self.log_weights.expand(chains, -1))
        merged_info = None
        for index, kernel in enumerate(self.kernels):
            rows = (choice == index).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            sub_state, sub_info = kernel.step(gather(split(source, index), rows), gather_chains(state, rows))
            state = scatter_chains(state, rows, sub_state)
            merged_info = _merge_info(merged_info, rows, sub_info, chains)
        return state, MixtureInfo(choice, merged_info)


def _merge_info(merged: Any, rows: torch.Tensor, info: Any, chains: int) -> Any:
    """Write `info` (for `rows`) into a full-size record; fields a kernel lacks stay NaN."""
    flat = flatten_info(info)
    if merged is None:
        merged = {}
    for name, value in flat.items():
        if name not in merged:
            merged[name] = torch.full((chains,), torch.nan, dtype=torch.float64)
        merged[name][rows.to(merged[name].device)] = value.to(torch.float64).cpu()
    return merged
