"""Run C chains of any kernel for N steps and record a trace.

The driver owns the policy (how many steps, what is recorded, the progress bar, the seed) so
kernels stay small.  Given the same seed and inputs, a run is deterministic.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from mcmc_llm.core.protocols import Kernel
from mcmc_llm.core.random import make_generator
from mcmc_llm.core.trace import Trace
from mcmc_llm.core.tree import flatten_info, num_chains

Functional = Callable[[Any], torch.Tensor]


def positive_int(name: str, value: Any) -> int:
    """`value` as an int, or a ValueError naming `name` and saying it must be a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _position_of(state: Any) -> Any:
    return getattr(state, "position", state)


def _as_numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach().cpu()
    if value.dtype == torch.bool:
        return value.numpy()
    if value.is_floating_point():
        return value.to(torch.float64).numpy()
    return value.numpy()


def run_chains(
    kernel: Kernel,
    initial_position: Any,
    num_steps: int,
    *,
    seed: int = 0,
    functionals: Mapping[str, Functional] | None = None,
    progress: bool = False,
    description: str = "sampling",
    generator: torch.Generator | None = None,
) -> Trace:
    """Run `num_steps` kernel steps on every chain of `initial_position`.

    functionals: `{name: f}` with `f(position) -> tensor[C, ...]`, recorded after every step as
        `samples[name]` of shape (chain, draw, ...).  When omitted and the position is a tensor,
        the position itself is recorded as `samples["x"]`.
    The kernel's info at every step is flattened into `stats` (chain, draw).  For MH kernels the
    log target density is recorded as `samples["log_target"]`.
    """
    num_steps = positive_int("num_steps", num_steps)
    chains = num_chains(initial_position)
    if chains < 1:
        raise ValueError(f"the initial position must hold at least one chain, got {chains}")
    if functionals is None:
        functionals = {"x": lambda x: x} if isinstance(initial_position, torch.Tensor) else {}
    generator = generator if generator is not None else make_generator(seed)
    state = kernel.init(initial_position)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in functionals}
    stats: dict[str, list[np.ndarray]] = {}
    steps = tqdm(range(num_steps), desc=description, disable=not progress, leave=False)
    for _ in steps:
        state, info = kernel.step(generator, state)
        position = _position_of(state)
        for name, functional in functionals.items():
            samples[name].append(_as_numpy(torch.as_tensor(functional(position))))
        if hasattr(state, "log_target"):
            samples.setdefault("log_target", []).append(_as_numpy(state.log_target))
        for name, value in flatten_info(info).items():
            stats.setdefault(name, []).append(_as_numpy(value))
    stack = lambda values: np.stack(values, axis=1)  # noqa: E731 - (chain, draw, ...)
    return Trace(
        samples={name: stack(values) for name, values in samples.items()},
        stats={name: stack(values) for name, values in stats.items()},
        final_state=state,
    )
