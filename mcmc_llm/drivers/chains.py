"""Run C chains of any kernel for N steps and record a trace.

The driver owns the policy (how many steps, what is recorded, the progress bar, the random
streams) so kernels stay small.  Chain c's randomness is its own stream, keyed by (seed, chain
index) (`mcmc_llm.core.random.Streams`), and step i draws from `stream.split(i)`: a chain's draws
do not depend on how many chains run beside it.  A run is deterministic given its seed.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from tqdm.auto import tqdm

from mcmc_llm.core.protocols import Kernel
from mcmc_llm.core.random import Source, Streams, split
from mcmc_llm.core.recorder import Functional, TraceRecorder
from mcmc_llm.core.trace import Trace
from mcmc_llm.core.tree import num_chains
from mcmc_llm.core.validate import integer


def run_chains(
    kernel: Kernel,
    initial_position: Any,
    num_steps: int,
    *,
    seed: int = 0,
    functionals: Mapping[str, Functional] | None = None,
    progress: bool = False,
    description: str = "sampling",
    generator: Source | None = None,
) -> Trace:
    """Run `num_steps` kernel steps on every chain of `initial_position`.

    Parameters:
    kernel: any `Kernel` (`init(position) -> state`, `step(source, state) -> (state, info)`).
    initial_position: the C chains' starting points, batched on the first axis (a tensor, or a
        dataclass / NamedTuple of [C, ...] tensors such as a `SequenceBatch`).
    num_steps: N >= 1 steps; the trace holds N draws per chain (the initial position is not one).
    seed: the root of the per-chain streams, chain c keyed by (seed, 0, c) (`Streams.for_chains`).
    functionals: `{name: f}` with `f(position) -> tensor[C, ...]`, recorded after every step as
        `samples[name]` of shape (chain, draw, ...).  When omitted and the position is a tensor,
        the position itself is recorded as `samples["x"]`.
    progress / description: a progress bar over the steps, and its label.
    generator: the root source instead of `seed`: per-chain `Streams` (step i uses `.split(i)`)
        or a shared `torch.Generator` (every step draws from it in turn).

    The kernel's info at every step is flattened into `stats` (chain, draw).  For MH kernels the
    log target density is recorded as `samples["log_target"]`.
    """
    num_steps = integer("num_steps", num_steps)
    chains = num_chains(initial_position)
    if chains < 1:
        raise ValueError(f"the initial position must hold at least one chain, got {chains}")
    if functionals is None:
        functionals = {"x": lambda x: x} if isinstance(initial_position, torch.Tensor) else {}
    root = generator if generator is not None else Streams.for_chains(seed, 0, torch.arange(chains))
    if isinstance(root, Streams) and len(root) != chains:
        raise ValueError(f"got {len(root)} random streams for {chains} chains; they must match")
    recorder = TraceRecorder(chains, num_steps, functionals)
    state = kernel.init(initial_position)
    for step in tqdm(range(num_steps), desc=description, disable=not progress, leave=False):
        state, info = kernel.step(split(root, step), state)
        recorder.record(slice(None), step, state, info)
    return recorder.trace(final_state=state)
