"""Statistical checks for samplers, shipped in the library so users can run them on their own kernels.

Every check has a stated false-failure rate `false_failure_rate` (default 1e-4): the probability that
it fails for a *correct* sampler.  Thresholds are derived from that rate and the sample size, never
tuned by hand.  Each check returns a small frozen result (`passed`, the statistic, its threshold or
p-value, and a readable `message`); each has an `assert_...` twin that raises `AssertionError(message)`.

* `chi_square_check`: Pearson's chi-square goodness of fit of counts over a finite set against an exact
  pmf (asymptotic chi-square law; small cells pooled).
* `total_variation_check`: the total-variation distance between the empirical law and the exact pmf,
  with the distribution-free Bretagnolle–Huber–Carol bound as threshold (valid at every sample size).
* `mcse_moment_check`: a mean of MCMC draws against its known value, in units of the Monte Carlo
  standard error computed from the ESS (ArviZ, `method="mean"`).
* `conservation_check`: start chains at exact draws of the target, take one kernel step, and test that
  the law after the step is still the target (chi-square).

The count-based checks assume independent draws.  For MCMC output, use one draw per independent chain
(e.g. the last one), not every draw of a chain; `mcse_moment_check` is the one built for correlated draws.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np
import torch
from scipy import stats

from mcmc_llm.core.random import make_generator
from mcmc_llm.core.tree import flatten_info

DEFAULT_FALSE_FAILURE_RATE = 1e-4


@dataclasses.dataclass(frozen=True)
class ChiSquareResult:
    """Pearson chi-square test; `passed` iff `p_value > false_failure_rate` and no impossible outcome was seen."""

    statistic: float
    degrees_of_freedom: int
    p_value: float
    false_failure_rate: float
    total_variation: float
    num_samples: int
    num_bins: int
    outside_count: int
    passed: bool
    message: str


@dataclasses.dataclass(frozen=True)
class TotalVariationResult:
    """TV distance against a threshold that a correct sampler exceeds with probability <= `false_failure_rate`."""

    statistic: float
    threshold: float
    false_failure_rate: float
    num_samples: int
    num_categories: int
    passed: bool
    message: str


@dataclasses.dataclass(frozen=True)
class MomentResult:
    """Per-dimension z-scores `(mean - expected) / mcse`; `statistic` is the largest |z|."""

    statistic: float
    threshold: float
    false_failure_rate: float
    estimate: tuple[float, ...]
    expected: tuple[float, ...]
    mcse: tuple[float, ...]
    ess: tuple[float, ...]
    z_scores: tuple[float, ...]
    passed: bool
    message: str


@dataclasses.dataclass(frozen=True)
class ConservationResult:
    """Chi-square test of the law after `num_steps` kernel steps from exact draws."""

    chi_square: ChiSquareResult
    acceptance_rate: float
    num_steps: int
    statistic: float
    p_value: float
    passed: bool
    message: str


def _check_rate(false_failure_rate: float) -> float:
    rate = float(false_failure_rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"false_failure_rate must lie strictly between 0 and 1, got {false_failure_rate!r}")
    return rate


def _counts_and_pmf(counts: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate; return (counts over the K categories, pmf, count in the optional trailing 'outside' bin)."""
    pmf = _to_numpy(probabilities).astype(np.float64)
    counts = _to_numpy(counts)
    if pmf.ndim != 1 or pmf.size == 0:
        raise ValueError(f"probabilities must be a non-empty 1-D array, got shape {pmf.shape}")
    if not np.all(np.isfinite(pmf)) or np.any(pmf < 0):
        raise ValueError(f"probabilities must be finite and non-negative, got {pmf.tolist()}")
    if abs(pmf.sum() - 1.0) > 1e-6:
        raise ValueError(f"probabilities must sum to 1, got a sum of {float(pmf.sum())!r}")
    if counts.ndim != 1 or counts.size not in (pmf.size, pmf.size + 1):
        raise ValueError(
            f"counts has shape {counts.shape}; expected ({pmf.size},) or ({pmf.size + 1},) "
            "(one per category, plus optionally the 'outside the support' bin of counts_from_samples)"
        )
    if np.any(counts < 0) or not np.all(np.mod(counts, 1) == 0):
        raise ValueError(f"counts must be non-negative integers, got {counts.tolist()}")
    counts = counts.astype(np.int64)
    outside = int(counts[pmf.size]) if counts.size > pmf.size else 0
    counts = counts[: pmf.size]
    if counts.sum() + outside == 0:
        raise ValueError("counts are all zero: there is nothing to test")
    return counts, pmf / pmf.sum(), outside


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def counts_from_samples(samples: Iterable[Hashable], support: Sequence[Hashable]) -> np.ndarray:
    """Counts of each element of `support` among `samples`, plus a last bin counting samples outside it.

    Samples are any hashables (ints, tuples of token ids, strings); tensors and arrays are read row by
    row (`tolist()`), and lists are turned into tuples.  The result has length `len(support) + 1`;
    the checks in this module fail when the last ('outside') bin is not zero.
    """
    index = {}
    for position, element in enumerate(support):
        key = _hashable(element)
        if key in index:
            raise ValueError(f"support lists {element!r} twice")
        index[key] = position
    if isinstance(samples, (torch.Tensor, np.ndarray)):
        samples = samples.tolist()
    counts = np.zeros(len(index) + 1, dtype=np.int64)
    for sample in samples:
        counts[index.get(_hashable(sample), len(index))] += 1
    return counts


def _hashable(value: Any) -> Hashable:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        value = value.tolist()
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _pool(expected: np.ndarray, min_expected: float) -> np.ndarray:
    """Bin label for each category: categories with expected count < min_expected share one bin,
    which absorbs the next smallest categories until it too reaches min_expected (or nothing is left)."""
    order = np.argsort(expected, kind="stable")
    labels = np.arange(expected.size)
    small = [i for i in order if expected[i] < min_expected]
    if not small:
        return labels
    pooled, total = list(small), expected[small].sum()
    rest = [i for i in order if expected[i] >= min_expected]
    while total < min_expected and rest:
        pooled.append(rest.pop(0))
        total = expected[pooled].sum()
    labels[pooled] = pooled[0]
    _, labels = np.unique(labels, return_inverse=True)
    return labels


def chi_square_check(
    counts: Any,
    probabilities: Any,
    false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE,
    min_expected: float = 5.0,
) -> ChiSquareResult:
    """Pearson's chi-square test of `counts` (independent draws) against the exact pmf `probabilities`.

    With n draws and expected counts `E_i = n p_i`, the statistic `X^2 = sum_i (O_i - E_i)^2 / E_i` is
    asymptotically chi-square with (bins - 1) degrees of freedom.  Categories with `E_i < min_expected`
    are pooled into one bin so the approximation holds.  The check passes iff the p-value
    `P(chi2_{bins-1} >= X^2)` exceeds `false_failure_rate`, so a correct sampler fails with
    probability ~`false_failure_rate`.  Any draw of a zero-probability category or outside the support
    (the trailing bin of `counts_from_samples`) fails the check outright.  The result also reports the
    total-variation distance `(1/2) sum_i |O_i/n - p_i|`.
    """
    rate = _check_rate(false_failure_rate)
    counts, pmf, outside = _counts_and_pmf(counts, probabilities)
    n = int(counts.sum()) + outside
    empirical = counts / n
    total_variation = 0.5 * (np.abs(empirical - pmf).sum() + outside / n)
    impossible = int(counts[pmf == 0].sum())
    possible = pmf > 0
    expected = n * pmf[possible]
    labels = _pool(expected, min_expected)
    observed_bins = np.bincount(labels, weights=counts[possible])
    expected_bins = np.bincount(labels, weights=expected)
    bins = expected_bins.size
    statistic = float(((observed_bins - expected_bins) ** 2 / expected_bins).sum())
    dof = bins - 1
    p_value = float(stats.chi2.sf(statistic, dof)) if dof > 0 else 1.0
    if outside or impossible:
        p_value = 0.0
        statistic = math.inf
    passed = p_value > rate
    verdict = "passed" if passed else "FAILED"
    message = (
        f"chi-square check {verdict}: X^2 = {statistic:.4g} on {dof} degrees of freedom, p-value {p_value:.3g} "
        f"(fails below {rate:g}); n = {n}, {bins} bins, TV distance {total_variation:.4g}"
    )
    if outside:
        message += f"; {outside} draws fell outside the support"
    if impossible:
        message += f"; {impossible} draws hit categories of probability zero"
    if dof == 0 and not (outside or impossible):
        message += "; only one bin after pooling, so the test has no power (use more draws)"
    return ChiSquareResult(
        statistic, dof, p_value, rate, float(total_variation), n, bins, outside, passed, message
    )


def total_variation_threshold(num_samples: int, num_categories: int, false_failure_rate: float) -> float:
    """The TV distance `t` with `P(TV(p_hat, p) >= t) <= false_failure_rate` for n iid draws over K categories.

    From Bretagnolle–Huber–Carol, `P(||p_hat - p||_1 >= eps) <= 2^K exp(-n eps^2 / 2)`; solving
    `2^K exp(-n eps^2 / 2) = rate` gives `eps = sqrt(2 (K log 2 + log(1/rate)) / n)` and `t = eps / 2`.
    """
    rate = _check_rate(false_failure_rate)
    return 0.5 * math.sqrt(2.0 * (num_categories * math.log(2.0) + math.log(1.0 / rate)) / num_samples)


def total_variation_check(
    samples_counts: Any, probabilities: Any, false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE
) -> TotalVariationResult:
    """TV distance `(1/2) sum_i |p_hat_i - p_i|` between the empirical law of n independent draws and `p`.

    Threshold (distribution-free, valid at every n, conservative): with K the number of categories that
    have positive probability or were observed (the 'outside' bin included when non-empty),
    `P(||p_hat - p||_1 >= eps) <= 2^K exp(-n eps^2 / 2)` (Bretagnolle–Huber–Carol), so the check
    fails, for a correct sampler, with probability at most `false_failure_rate` when the threshold is
    `TV < sqrt(2 (K log 2 + log(1/false_failure_rate)) / n) / 2`.  Draws outside the support or in
    categories of probability zero fail the check outright.
    """
    rate = _check_rate(false_failure_rate)
    counts, pmf, outside = _counts_and_pmf(samples_counts, probabilities)
    n = int(counts.sum()) + outside
    statistic = float(0.5 * (np.abs(counts / n - pmf).sum() + outside / n))
    categories = int(((pmf > 0) | (counts > 0)).sum()) + (1 if outside else 0)
    threshold = total_variation_threshold(n, categories, rate)
    impossible = int(counts[pmf == 0].sum())
    passed = statistic < threshold and outside == 0 and impossible == 0
    verdict = "passed" if passed else "FAILED"
    message = (
        f"total-variation check {verdict}: TV = {statistic:.4g}, threshold {threshold:.4g} "
        f"(n = {n}, K = {categories}, false-failure rate {rate:g})"
    )
    if outside:
        message += f"; {outside} draws fell outside the support"
    if impossible:
        message += f"; {impossible} draws hit categories of probability zero"
    return TotalVariationResult(statistic, threshold, rate, n, categories, passed, message)


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
    """`arviz.ess` on a (chain, draw) array, for ArviZ 0.x (`arviz.ess(array)`) or 1.x (`arviz_stats`)."""
    try:
        from arviz_stats.base import array_stats
    except ImportError:
        import arviz

        return float(arviz.ess(draws, method=method))
    return float(array_stats.ess(draws, chain_axis=0, draw_axis=1, method=method))


def _as_chain_draw_dim(draws: Any) -> np.ndarray:
    values = _to_numpy(draws).astype(np.float64)
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3:
        raise ValueError(f"draws must have shape (chain, draw) or (chain, draw, dim), got {values.shape}")
    if values.shape[1] < 4:
        raise ValueError(f"need at least 4 draws per chain to estimate an ESS, got {values.shape[1]}")
    return values


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
    message = (
        f"MCSE moment check {verdict}: max |z| = {statistic:.3g} (threshold {threshold:.3g}, false-failure rate "
        f"{rate:g} over {dim} dims); worst dim {worst}: mean {estimate[worst]:.5g} vs expected {expected[worst]:.5g}, "
        f"mcse {mcse[worst]:.3g}, ESS {ess[worst]:.4g}"
    )
    if np.any(np.isnan(z)):
        message += "; some z-scores are NaN (ESS could not be estimated)"
    return MomentResult(
        statistic, threshold, rate, tuple(map(float, estimate)), tuple(map(float, expected)),
        tuple(map(float, mcse)), tuple(map(float, ess)), tuple(map(float, z)), passed, message,
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
    never moves passes trivially.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
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
        chi_square, acceptance_rate, num_steps, chi_square.statistic, chi_square.p_value, chi_square.passed, message
    )


def _raise_unless(result):
    if not result.passed:
        raise AssertionError(result.message)
    return result


def assert_chi_square(*args, **kwargs) -> ChiSquareResult:
    """`chi_square_check`, raising AssertionError(message) when it fails; returns the result otherwise."""
    return _raise_unless(chi_square_check(*args, **kwargs))


def assert_total_variation(*args, **kwargs) -> TotalVariationResult:
    """`total_variation_check`, raising AssertionError(message) when it fails."""
    return _raise_unless(total_variation_check(*args, **kwargs))


def assert_mcse_moment(*args, **kwargs) -> MomentResult:
    """`mcse_moment_check`, raising AssertionError(message) when it fails."""
    return _raise_unless(mcse_moment_check(*args, **kwargs))


def assert_conservation(*args, **kwargs) -> ConservationResult:
    """`conservation_check`, raising AssertionError(message) when it fails."""
    return _raise_unless(conservation_check(*args, **kwargs))


__all__ = [
    "ChiSquareResult", "ConservationResult", "MomentResult", "TotalVariationResult",
    "assert_chi_square", "assert_conservation", "assert_mcse_moment", "assert_total_variation",
    "chi_square_check", "conservation_check", "counts_from_samples", "effective_sample_size_of_mean",
    "mcse_moment_check", "total_variation_check", "total_variation_threshold",
]
