"""Explicit random streams.

All randomness is drawn from a `torch.Generator` passed in by the caller, so a run is a
deterministic function of its seed.  Draws are made on the generator's device and moved to the
device of the tensors they are used with, so the same seed gives the same chain on CPU and GPU
whenever the model's arithmetic agrees.
"""

from __future__ import annotations

import torch


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (an int >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def uniform(generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Uniform(0, 1) draws with the shape, dtype and device of `like`."""
    draws = torch.rand(like.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return draws.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float64)


def normal(generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws with the shape, dtype and device of `like`."""
    draws = torch.randn(like.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return draws.to(device=like.device, dtype=like.dtype)


def categorical(generator: torch.Generator, log_weights: torch.Tensor) -> torch.Tensor:
    """One draw per row from `softmax(log_weights)` ([B, K] -> [B]); rows may hold -inf.

    Inverse-CDF sampling: only one uniform per row crosses from the generator's device, and an
    entry of probability zero can never be drawn.
    """
    weights = torch.softmax(log_weights.to(torch.float64), dim=-1)
    cumulative = torch.cumsum(weights, dim=-1)
    thresholds = uniform(generator, cumulative[:, :1]) * cumulative[:, -1:]
    index = torch.searchsorted(cumulative, thresholds, right=True).squeeze(-1)
    return index.clamp_(max=log_weights.shape[-1] - 1)
