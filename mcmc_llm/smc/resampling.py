"""Resampling schemes for sequential Monte Carlo.

Each scheme maps normalised-or-not log-weights `log w` [..., P] (batched over any leading axes,
e.g. one row per prompt) to ancestor indices `a` [..., P] in `0..P-1`, drawn with the caller's
`torch.Generator`.  All four are *unbiased*: with `W_i = w_i / sum_j w_j` and `N_i = #{k : a_k = i}`
the number of offspring of particle i,

    E[N_i] = P W_i,

which is what keeps the SMC normalising-constant estimate unbiased.  They differ in variance:

* `multinomial`: `a_k` iid from W (inverse CDF of P independent uniforms).  Var N_i = P W_i (1 - W_i).
* `stratified`:  one uniform in each stratum `[(k-1)/P, k/P)`: `u_k = (k - 1 + U_k) / P`.
* `systematic`:  a single uniform shared by all strata: `u_k = (k - 1 + U) / P`; N_i is
  floor(P W_i) or ceil(P W_i).
* `residual`:    `floor(P W_i)` copies of particle i deterministically, the remaining
  `R = P - sum_i floor(P W_i)` drawn multinomially from the residual weights `P W_i - floor(P W_i)`.

Stratified, systematic and residual resampling all have `Var N_i <= ` that of multinomial
(Douc, Cappé & Moulines 2005).  Particles of weight zero never get offspring.  Ancestors of
stratified and systematic resampling come out sorted; multinomial and residual ones are sorted
too (a fixed order helps a KV-cache backend keep copies of one particle next to each other).
"""

from __future__ import annotations

from typing import Callable

import torch

from mcmc_llm.core.random import uniform

Resampler = Callable[[torch.Generator, torch.Tensor], torch.Tensor]


def normalised_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """`W = softmax(log w)` along the last axis (float64); a row of all -inf is an error."""
    log_weights = log_weights.to(torch.float64)
    if bool(torch.isneginf(log_weights).all(-1).any()) or bool(torch.isnan(log_weights).any()):
        raise ValueError("every row of log_weights needs at least one finite weight and no NaN")
    return torch.softmax(log_weights, dim=-1)


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """Kish's ESS `(sum w)^2 / sum w^2 = 1 / sum W^2` along the last axis, in [1, P]; 0 for a row
    whose weights are all zero (log-weight -inf)."""
    log_weights = log_weights.to(torch.float64)
    dead = torch.isneginf(log_weights).all(-1)
    safe = torch.where(dead[..., None], torch.zeros_like(log_weights), log_weights)
    weights = normalised_weights(safe)
    return torch.where(dead, torch.zeros_like(weights[..., 0]), 1.0 / (weights * weights).sum(-1))


def _invert(weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Ancestors `a_k = min{i : sum_{j<=i} W_j > u_k}` for points u in [0, 1), [..., P]."""
    cumulative = torch.cumsum(weights, dim=-1)
    cumulative = cumulative / cumulative[..., -1:]
    index = torch.searchsorted(cumulative.contiguous(), points.contiguous(), right=True)
    return index.clamp_(max=weights.shape[-1] - 1)


def _flat(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    if log_weights.ndim == 0:
        raise ValueError("log_weights must have at least one axis (the particles)")
    if log_weights.shape[-1] < 1:
        raise ValueError("log_weights must hold at least one particle")
    return normalised_weights(log_weights).reshape(-1, log_weights.shape[-1]), log_weights.shape


def multinomial(generator: torch.Generator, log_weights: torch.Tensor) -> torch.Tensor:
    """P iid draws from W per row; returned sorted."""
    weights, shape = _flat(log_weights)
    points = uniform(generator, weights)
    return _invert(weights, points).sort(-1).values.reshape(shape)


def stratified(generator: torch.Generator, log_weights: torch.Tensor) -> torch.Tensor:
    """One uniform per stratum: `u_k = (k + U_k) / P`, k = 0..P-1."""
    weights, shape = _flat(log_weights)
    count = weights.shape[-1]
    offsets = torch.arange(count, device=weights.device, dtype=torch.float64)[None]
    points = (offsets + uniform(generator, weights)) / count
    return _invert(weights, points).reshape(shape)


def systematic(generator: torch.Generator, log_weights: torch.Tensor) -> torch.Tensor:
    """One shared uniform: `u_k = (k + U) / P`, k = 0..P-1."""
    weights, shape = _flat(log_weights)
    count = weights.shape[-1]
    offsets = torch.arange(count, device=weights.device, dtype=torch.float64)[None]
    points = (offsets + uniform(generator, weights[:, :1])) / count
    return _invert(weights, points).reshape(shape)


def residual(generator: torch.Generator, log_weights: torch.Tensor) -> torch.Tensor:
    """`floor(P W_i)` deterministic copies, the rest multinomial on the residuals; returned sorted."""
    weights, shape = _flat(log_weights)
    rows, count = weights.shape
    expected = count * weights
    copies = torch.floor(expected).clamp_(max=count).to(torch.long)
    # Guard against rounding pushing the deterministic part above P.
    while bool((copies.sum(-1) > count).any()):
        over = copies.sum(-1) > count
        largest = copies.argmax(-1)
        copies[over, largest[over]] -= 1
    remaining = count - copies.sum(-1)
    residuals = (expected - copies).clamp(min=0.0)
    has_rest = remaining > 0
    safe = torch.where(has_rest[:, None] & (residuals.sum(-1, keepdim=True) > 0), residuals, weights)
    draws = _invert(safe, uniform(generator, weights))  # P candidate draws per row; the first R are used
    used = torch.arange(count, device=weights.device)[None] < remaining[:, None]
    extra = torch.zeros_like(copies).scatter_add_(1, draws, used.to(torch.long))
    offspring = copies + extra
    flat_index = torch.arange(rows * count, device=weights.device)
    ancestors = torch.repeat_interleave(flat_index, offspring.reshape(-1)).reshape(rows, count)
    ancestors = ancestors - torch.arange(rows, device=weights.device)[:, None] * count
    return ancestors.reshape(shape)


RESAMPLING_SCHEMES: dict[str, Resampler] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def get_resampler(name: str) -> Resampler:
    """The scheme called `name` (one of `RESAMPLING_SCHEMES`)."""
    if name not in RESAMPLING_SCHEMES:
        raise ValueError(f"unknown resampling scheme {name!r}; allowed: {', '.join(RESAMPLING_SCHEMES)}")
    return RESAMPLING_SCHEMES[name]


def offspring_counts(ancestors: torch.Tensor, num_particles: int) -> torch.Tensor:
    """`N_i = #{k : a_k = i}` along the last axis: [..., P] ancestors -> [..., num_particles] counts."""
    flat = ancestors.reshape(-1, ancestors.shape[-1])
    counts = torch.zeros(flat.shape[0], num_particles, dtype=torch.long, device=ancestors.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    return counts.reshape(*ancestors.shape[:-1], num_particles)
