"""A Gaussian mixture in R^d with closed-form moments.

    pi(x) = sum_k w_k N(x; mu_k, diag(sigma_k^2))

Mean: `sum_k w_k mu_k`.  Second moment: `sum_k w_k (sigma_k^2 + mu_k^2)` (per coordinate), so the
variance is known exactly and moment tests need no reference sampler.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from mcmc_llm.core.random import categorical, normal


class GaussianMixture:
    def __init__(self, weights: Sequence[float], means, scales):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.scales = torch.as_tensor(scales, dtype=torch.float64)
        components = self.weights.numel()
        if self.weights.dim() != 1 or components == 0:
            raise ValueError(f"weights must be a non-empty 1-D sequence, got shape {tuple(self.weights.shape)}")
        if bool((self.weights < 0).any()) or abs(float(self.weights.sum()) - 1.0) > 1e-9:
            raise ValueError(f"weights must be non-negative and sum to 1, got {self.weights.tolist()}")
        if self.means.dim() != 2 or self.means.shape[0] != components:
            raise ValueError(
                f"means must have shape (components={components}, dim), got {tuple(self.means.shape)}"
            )
        if self.scales.shape != self.means.shape:
            raise ValueError(
                f"scales must have the shape of means {tuple(self.means.shape)}, got {tuple(self.scales.shape)}"
            )
        if bool((self.scales <= 0).any()):
            raise ValueError("scales must be positive")
        self.dim = self.means.shape[1]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """`log pi(x)` for x of shape [C, d]."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"positions must have shape (chains, {self.dim}), got {tuple(x.shape)}")
        z = (x[:, None, :] - self.means[None]) / self.scales[None]
        log_components = (
            -0.5 * (z**2).sum(-1) - torch.log(self.scales).sum(-1)[None] - 0.5 * self.dim * math.log(2 * math.pi)
        )
        return torch.logsumexp(torch.log(self.weights)[None] + log_components, dim=-1)

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def variance(self) -> torch.Tensor:
        second = (self.weights[:, None] * (self.scales**2 + self.means**2)).sum(0)
        return second - self.mean() ** 2

    def sample(self, source, num: int) -> torch.Tensor:
        """Exact draws, shape [num, d]."""
        component = categorical(source, torch.log(self.weights).expand(num, -1))
        noise = normal(source, torch.empty(num, self.dim, dtype=torch.float64))
        return self.means[component] + self.scales[component] * noise
