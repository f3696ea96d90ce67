"""Checks for Markov chains: a mean of correlated draws against its value (MCSE from ArviZ's ESS)
and conservation of the target by a kernel started at exact draws.

Each result states its power: `MomentResult.min_detectable_shift` (the smallest shift of the mean that
fails the check with probability >= 90%, per dimension, in the moment's units; `min_detectable_shift_mcse`
in MCSE units) and `ConservationResult.min_detectable_tv` (the chi-square's, over the pooled bins).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np
from scipy import stats

from mcmc_llm.core.validate import integer

from mcmc_llm.testing.discrete import (
    DEFAULT_FALSE_FAILURE_RATE, DEFAULT_POWER, ChiSquareResult, _check_power, _check_rate, _count, _to_numpy,
    chi_square_check, counts_from_samples,
)


@dataclasses.dataclass(frozen=True)
class MomentResult:
    """Per-dimension z-scores `(mean - expected) / mcse`; `statistic` is the largest |z|.

    `min_detectable_shift_mcse = threshold + Phi^{-1}(0.9)` is the smallest |mean shift|, in MCSE units,
    that fails the check with probability >= 90%; `min_detectable_shift` is that times each dim's MCSE.
    """

    statistic: float
    threshold: float
    false_failure_rate: float
    estimate: tuple[float, ...]
    expected: tuple[float, ...]
    mcse: tuple[float, ...]
    ess: tuple[float, ...]
    z_scores: tuple[float, ...]
    min_detectable_shift: tuple[float, ...]
    min_detectable_shift_mcse: float
    passed: bool
    message: str


@dataclasses.dataclass(frozen=True)
class ConservationResult:
    """Chi-square test of the law after `num_steps` kernel steps from exact draws.

    `min_detectable_tv` is the chi-square's (`chi_square_min_detectable_tv` with the number of chains and
    the pooled bins): a kernel that moves the law by that TV distance (over the bins) fails with
    probability >= 90%.
    """

    chi_square: ChiSquareResult
    acceptance_rate: float
    num_steps: int
    statistic: float
    p_value: float
    min_detectable_tv: float
    passed: bool
    message: str



def effective_sample_size_of_mean(draws: Any) -> np.ndarray:
    """ArviZ's ESS for the mean (`method="mean"`) of draws shaped (chain, draw) or (chain, draw, dim); one per dim.

    Goes through `mcmc_llm.diagnostics.ess`, which handles ArviZ 0.x and 1.x alike.
    """
    values = _as_chain_draw_dim(draws)
    try:
        from mcmc_llm.diagnostics.arviz_adapter import ess
    except ImportError:  # diagnostics unavailable: call ArviZ directly
        ess = _arviz_ess
    return np.array([float(ess(values[..., d], method="mean")) for d in range(values.shape[-1])])


def _arviz_ess(draws: np.ndarray, method: str) -> float:
    """`arviz.ess` on a (chain, draw) array, for ArviZ 0.x (`arviz.ess(array)`) or 1.x (`arviz_stats`).

    method="tail" uses the 5% and 95% quantiles, as `mcmc_llm.diagnostics.ess` does (ArviZ 1.x
    requires `prob` for the tail ESS of an array).
    """
    kwargs = {"prob": 0.05} if method == "tail" else {}
    try:
        from arviz_stats.base import array_stats
    except ImportError:
        import arviz

        return float(arviz.ess(draws, method=method, **kwargs))
    return float(array_stats.ess(draws, chain_axis=0, draw_axis=1, method=method, **kwargs))


def _as_chain_draw_dim(draws: Any) -> np.ndarray:
    values = _to_numpy(draws).astype(np.float64)
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3:
        raise ValueError(f"draws must have shape (chain, draw) or (chain, draw, dim), got {values.shape}")
    if values.shape[1] < 4:
        raise ValueError(f"need at least 4 draws per chain to estimate an ESS, got {values.shape[1]}")
    return values


def mcse_min_detectable_shift(
    mcse: Any = 1.0,
    false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE,
    power: float = DEFAULT_POWER,
    num_dims: int = 1,
) -> Any:
    """Smallest |mean shift| that `mcse_moment_check` detects with probability >= `power`.

    Mathematics.  The check fails when `|z| >= z_c` with `z_c = Phi^{-1}(1 - rate / (2 D))` (two-sided,
    Bonferroni over D dims).  If the chain's mean is off by `s` then `z ~ N(s / mcse, 1)`, and
    `P(|z| >= z_c) >= P(z >= z_c) = Phi(s / mcse - z_c)`, which is >= power once
    `|s| >= (z_c + Phi^{-1}(power)) * mcse`.  That is returned, in the units of `mcse` (with the default
    `mcse = 1`, in MCSE units).  Approximate: it treats the estimated MCSE as exact.  Pass
    `sd / sqrt(ESS)` to size a run before drawing it.  Returns a float for a scalar `mcse`, else an array.
    """
    rate, power = _check_rate(false_failure_rate), _check_power(power)
    num_dims = _count("num_dims", num_dims)
    factor = float(stats.norm.isf(rate / (2.0 * num_dims)) + stats.norm.ppf(power))
    values = np.asarray(mcse, dtype=np.float64) * factor
    return float(values) if values.ndim == 0 else values


def mcse_moment_check(
    draws: Any, expected_mean: Any, false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE
) -> MomentResult:
    """Is the mean of correlated MCMC draws consistent with the known `expected_mean`?

    For each dimension d: `z_d = (mean_d - m_d) / mcse_d` with `mcse_d = sd_d / sqrt(ESS_d)`, where
    `sd_d` is the standard deviation of all draws and `ESS_d` ArviZ's effective sample size for the
    mean.  Under a correct sampler `z_d` is approximately N(0, 1); with a Bonferroni correction over D
    dimensions the check passes iff every `|z_d| < Phi^{-1}(1 - false_failure_rate / (2 D))`.
    To test a second moment or any other expectation, pass `f(draws)` and `E[f]`.
    The chains should start in stationarity (e.g. at exact draws) or after a burn-in long enough that
    the bias is small against the MCSE.

    Power: the result's `min_detectable_shift` (per dim, in the moment's units) and
    `min_detectable_shift_mcse` (in MCSE units, `threshold + Phi^{-1}(0.9)`) are the smallest |shift| of the
    mean that fails the check with probability >= 90% (`mcse_min_detectable_shift`).
    """
    rate = _check_rate(false_failure_rate)
    values = _as_chain_draw_dim(draws)
    dim = values.shape[-1]
    expected = _to_numpy(expected_mean).astype(np.float64).reshape(-1)
    if expected.size not in (1, dim):
        raise ValueError(f"expected_mean has {expected.size} values; the draws have {dim} dimensions")
    expected = np.broadcast_to(expected, (dim,))
    estimate = values.mean(axis=(0, 1))
    sd = values.reshape(-1, dim).std(axis=0, ddof=1)
    ess = effective_sample_size_of_mean(values)
    mcse = sd / np.sqrt(ess)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(mcse > 0, (estimate - expected) / mcse, np.where(estimate == expected, 0.0, np.inf))
    threshold = float(stats.norm.ppf(1.0 - rate / (2.0 * dim)))
    statistic = float(np.max(np.abs(z)))
    passed = bool(np.all(np.abs(z) < threshold))
    verdict = "passed" if passed else "FAILED"
    worst = int(np.argmax(np.where(np.isnan(z), -1.0, np.abs(z))))
    shift_mcse = mcse_min_detectable_shift(1.0, rate, DEFAULT_POWER, dim)
    shift = mcse * shift_mcse
    message = (
        f"MCSE moment check {verdict}: max |z| = {statistic:.3g} (threshold {threshold:.3g}, false-failure rate "
        f"{rate:g} over {dim} dims); worst dim {worst}: mean {estimate[worst]:.5g} vs expected {expected[worst]:.5g}, "
        f"mcse {mcse[worst]:.3g}, ESS {ess[worst]:.4g}; detects a shift of the mean >= {shift_mcse:.3g} MCSE "
        f"({shift[worst]:.3g} in dim {worst}) with power >= 0.9"
    )
    if np.any(np.isnan(z)):
        message += "; some z-scores are NaN (ESS could not be estimated)"
    return MomentResult(
        statistic, threshold, rate, tuple(map(float, estimate)), tuple(map(float, expected)),
        tuple(map(float, mcse)), tuple(map(float, ess)), tuple(map(float, z)), tuple(map(float, shift)),
        shift_mcse, passed, message,
    )


def conservation_check(
    kernel: Any,
    exact_draws_position: Any,
    functional_values_fn: Callable[[Any], Iterable[Hashable]],
    probabilities: Any,
    support: Sequence[Hashable],
    seed: int = 0,
    false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE,
    *,
    num_steps: int = 1,
    min_expected: float = 5.0,
) -> ConservationResult:
    """Invariance of the target under the kernel: if `X ~ pi` then `X' ~ K(X, .)` must also follow `pi`.

    `exact_draws_position` holds C chains drawn exactly (independently) from the target; the kernel is
    initialised there and stepped `num_steps` times (default one).  `functional_values_fn(position)`
    maps the position to C hashable keys (a state, a tuple of token ids, a bin index), whose exact law
    under the target is `probabilities` over `support`.  The chi-square check is then applied to the
    keys.  The acceptance rate (mean of every `accepted` field of the infos) is reported: a kernel that
    never moves passes trivially.  Power: it is a chi-square on C draws, so the result's
    `min_detectable_tv` is `chi_square_min_detectable_tv(C, bins, false_failure_rate)` (TV over the pooled
    bins detected with probability >= 90%); size C with `samples_to_detect_tv`.
    """
    from mcmc_llm.core.random import make_generator  # torch: imported on use, so the module imports without it
    from mcmc_llm.core.tree import flatten_info

    num_steps = integer("num_steps", num_steps)
    generator = make_generator(seed)
    state = kernel.init(exact_draws_position)
    accepted = []
    for _ in range(num_steps):
        state, info = kernel.step(generator, state)
        flat = flatten_info(info)
        accepted.extend(v.double().nanmean().item() for k, v in flat.items() if k.split(".")[-1] == "accepted")
    acceptance_rate = float(np.mean(accepted)) if accepted else math.nan
    keys = functional_values_fn(getattr(state, "position", state))
    counts = counts_from_samples(keys, support)
    chi_square = chi_square_check(counts, probabilities, false_failure_rate, min_expected)
    verdict = "passed" if chi_square.passed else "FAILED"
    message = (
        f"conservation check {verdict} after {num_steps} kernel step(s) from exact draws "
        f"(acceptance rate {acceptance_rate:.3g}): {chi_square.message}"
    )
    if acceptance_rate == 0.0:
        message += "; no move was accepted, so the check says nothing about the kernel"
    return ConservationResult(
        chi_square, acceptance_rate, num_steps, chi_square.statistic, chi_square.p_value,
        chi_square.min_detectable_tv, chi_square.passed, message,
    )
