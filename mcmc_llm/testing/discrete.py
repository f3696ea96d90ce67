"""Checks of independent draws over a finite set against an exact pmf: chi-square and total variation.

Every check has a stated false-failure rate (default 1e-4) and returns a frozen result with
`passed`, the statistic, its threshold or p-value, its power (`min_detectable_tv`: the smallest TV
distance it detects with probability >= 90%) and a readable `message`.  The power can be computed
before drawing samples (`chi_square_min_detectable_tv`, `samples_to_detect_tv`,
`samples_to_detect_tv_for_pmf`, `total_variation_min_detectable`), so that a test can size itself.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
from scipy import optimize, stats

from mcmc_llm.core.validate import integer

DEFAULT_FALSE_FAILURE_RATE = 1e-4
DEFAULT_POWER = 0.9


@dataclasses.dataclass(frozen=True)
class ChiSquareResult:
    """Pearson chi-square test; `passed` iff `p_value > false_failure_rate` and no impossible outcome was seen.

    `min_detectable_tv` is `chi_square_min_detectable_tv(num_samples, num_bins, false_failure_rate)`: a
    sampler whose law is at TV distance >= this value from the pmf, *measured over the pooled bins*, fails
    with probability >= 90% (approximately: noncentral chi-square law of the statistic).
    """

    statistic: float
    degrees_of_freedom: int
    p_value: float
    false_failure_rate: float
    total_variation: float
    num_samples: int
    num_bins: int
    outside_count: int
    min_detectable_tv: float
    passed: bool
    message: str


@dataclasses.dataclass(frozen=True)
class TotalVariationResult:
    """TV distance against a threshold that a correct sampler exceeds with probability <= `false_failure_rate`.

    `min_detectable_tv` is `total_variation_min_detectable(num_samples, num_categories, false_failure_rate)`:
    a sampler at TV distance >= this value fails with probability >= 90% (a rigorous, conservative bound).
    """

    statistic: float
    threshold: float
    false_failure_rate: float
    num_samples: int
    num_categories: int
    min_detectable_tv: float
    passed: bool
    message: str



def _check_rate(false_failure_rate: float) -> float:
    rate = float(false_failure_rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"false_failure_rate must lie strictly between 0 and 1, got {false_failure_rate!r}")
    return rate


def _check_power(power: float) -> float:
    value = float(power)
    if not 0.0 < value < 1.0:
        raise ValueError(f"power must lie strictly between 0 and 1, got {power!r}")
    return value


def _count(name: str, value: Any, minimum: int = 1) -> int:
    """`value` as an int >= `minimum` (`core.validate.integer`); a float such as `1e4` counts as that integer."""
    return integer(name, int(value) if isinstance(value, float) and value.is_integer() else value, minimum)


def chi_square_noncentrality_for_power(
    degrees_of_freedom: int, false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE, power: float = DEFAULT_POWER
) -> float:
    """The noncentrality `lambda` at which the chi-square test rejects with probability `power`.

    Solves `P(ncx2(dof, lambda) > chi2.isf(false_failure_rate, dof)) = power` for `lambda` (`brentq`).
    Returns inf when `dof < 1` (a single bin: the test has no power).
    """
    return _noncentrality_for_power(int(degrees_of_freedom), _check_rate(false_failure_rate), _check_power(power))


@functools.lru_cache(maxsize=1024)
def _noncentrality_for_power(dof: int, rate: float, power: float) -> float:
    if dof < 1:
        return math.inf
    if power <= rate:
        return 0.0
    critical = stats.chi2.isf(rate, dof)
    gap = lambda noncentrality: float(stats.ncx2.sf(critical, dof, noncentrality)) - power  # noqa: E731
    upper = max(1.0, critical)
    while gap(upper) < 0:
        upper *= 2.0
    return float(optimize.brentq(gap, 0.0, upper, xtol=1e-10, rtol=1e-12))


def chi_square_min_detectable_tv(
    num_samples: int, num_bins: int, false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE,
    power: float = DEFAULT_POWER,
) -> float:
    """Smallest TV distance (over the bins) that `chi_square_check` detects with probability >= `power`.

    Mathematics.  For n draws from a law q, binned into B bins where the tested pmf is p, the Pearson
    statistic is approximately noncentral chi-square with dof = B - 1 and noncentrality
    `lambda = n sum_i (q_i - p_i)^2 / p_i`.  By Cauchy–Schwarz,
    `(sum_i |q_i - p_i|)^2 <= sum_i (q_i - p_i)^2 / p_i * sum_i p_i`, so at TV distance
    `delta = (1/2) sum_i |q_i - p_i|` we have `lambda >= 4 n delta^2`, with equality when |q_i - p_i| is
    proportional to p_i (the worst case).  The power is increasing in lambda, so it is at least
    `P(ncx2(dof, 4 n delta^2) > chi2.isf(rate, dof))`; this returns the delta where that equals `power`,
    `delta = sqrt(lambda_power / (4 n))` (see `chi_square_noncentrality_for_power`).

    Caveats: the guarantee is about the TV between the laws *after pooling into bins* (cells with small
    expected counts are pooled by `chi_square_check`, and a difference inside a pooled bin is invisible);
    `num_bins` is the number of bins after pooling (the number of categories with positive probability is
    an upper bound, which gives a conservative answer).  The noncentral law is an asymptotic approximation.
    A value >= 1 means that no TV distance is guaranteed to be detected (inf for a single bin).
    Example: n = 6000 draws, 15 bins, rate 1e-4, power 0.9 gives 0.044.
    """
    n = _count("num_samples", num_samples)
    bins = _count("num_bins", num_bins)
    noncentrality = chi_square_noncentrality_for_power(bins - 1, false_failure_rate, power)
    return math.sqrt(noncentrality / (4.0 * n))


def samples_to_detect_tv(
    tv: float, num_bins: int, false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE, power: float = DEFAULT_POWER
) -> int:
    """Smallest n with `chi_square_min_detectable_tv(n, num_bins, false_failure_rate, power) <= tv`.

    The inverse of `chi_square_min_detectable_tv`: `n = ceil(lambda_power / (4 tv^2))`.  Pass the number of
    categories with positive probability as `num_bins` when the pooled count is not known in advance: the
    required noncentrality grows with the bins, so pooling can only lower the min detectable TV.
    """
    tv = float(tv)
    if not 0.0 < tv <= 1.0:
        raise ValueError(f"tv must lie in (0, 1], got {tv!r}")
    bins = _count("num_bins", num_bins, minimum=2)
    noncentrality = chi_square_noncentrality_for_power(bins - 1, false_failure_rate, power)
    n = max(1, math.ceil(noncentrality / (4.0 * tv * tv)))
    while math.sqrt(noncentrality / (4.0 * n)) > tv:  # guard against rounding in the ceil
        n += 1
    return n


def chi_square_num_bins(probabilities: Any, num_samples: int, min_expected: float = 5.0) -> int:
    """The number of bins `chi_square_check` uses for n draws against `probabilities` (after pooling the
    categories whose expected count `n p_i` is below `min_expected`; zero-probability categories dropped)."""
    pmf = _to_numpy(probabilities).astype(np.float64)
    n = _count("num_samples", num_samples)
    positive = pmf[pmf > 0] / pmf.sum()
    if positive.size == 0:
        raise ValueError("probabilities have no positive entry")
    return int(_pool(n * positive, min_expected).max()) + 1


def samples_to_detect_tv_for_pmf(
    tv: float, probabilities: Any, false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE,
    power: float = DEFAULT_POWER, min_expected: float = 5.0,
) -> int:
    """A number of draws n at which `chi_square_check(counts, probabilities)` has `min_detectable_tv <= tv`.

    Like `samples_to_detect_tv`, but with the bins `chi_square_check` will really use: the pooled bin count
    depends on n, so this starts from the number of categories with positive probability and lowers n
    while fewer bins need fewer draws (`n <- samples_to_detect_tv(tv, chi_square_num_bins(p, n))`, a
    decreasing sequence).  The result satisfies the guarantee and is at most `samples_to_detect_tv(tv, K)`.
    As always for the chi-square, the TV is measured over the pooled bins.
    """
    pmf = _to_numpy(probabilities).astype(np.float64)
    n = samples_to_detect_tv(tv, int((pmf > 0).sum()), false_failure_rate, power)
    while True:
        fewer = samples_to_detect_tv(tv, chi_square_num_bins(pmf, n, min_expected), false_failure_rate, power)
        if fewer >= n:
            return n
        n = fewer


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


def _is_tensor(value: Any) -> bool:  # torch is not imported here: a tensor exists only once torch is loaded
    return "torch" in sys.modules and isinstance(value, sys.modules["torch"].Tensor)


def _to_numpy(value: Any) -> np.ndarray:
    if _is_tensor(value):
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
    if _is_tensor(samples) or isinstance(samples, np.ndarray):
        samples = samples.tolist()
    counts = np.zeros(len(index) + 1, dtype=np.int64)
    for sample in samples:
        counts[index.get(_hashable(sample), len(index))] += 1
    return counts


def _hashable(value: Any) -> Hashable:
    if _is_tensor(value) or isinstance(value, np.ndarray):
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

    Power: `min_detectable_tv` in the result (and the message) is the smallest TV distance between the
    sampler's law and `probabilities`, *after pooling into the bins*, that fails the check with
    probability >= 90% (`chi_square_min_detectable_tv`, which states the mathematics); size n before
    sampling with `samples_to_detect_tv` or, with the bins this check will pool, `samples_to_detect_tv_for_pmf`.
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
    min_detectable = chi_square_min_detectable_tv(n, bins, rate)
    verdict = "passed" if passed else "FAILED"
    message = (
        f"chi-square check {verdict}: X^2 = {statistic:.4g} on {dof} degrees of freedom, p-value {p_value:.3g} "
        f"(fails below {rate:g}); n = {n}, {bins} bins, TV distance {total_variation:.4g}; "
        f"detects TV >= {min_detectable:.3g} over the bins with power >= 0.9"
    )
    if outside:
        message += f"; {outside} draws fell outside the support"
    if impossible:
        message += f"; {impossible} draws hit categories of probability zero"
    if dof == 0 and not (outside or impossible):
        message += "; only one bin after pooling, so the test has no power (use more draws)"
    return ChiSquareResult(
        statistic, dof, p_value, rate, float(total_variation), n, bins, outside, min_detectable, passed, message
    )


def total_variation_threshold(num_samples: int, num_categories: int, false_failure_rate: float) -> float:
    """The TV distance `t` with `P(TV(p_hat, p) >= t) <= false_failure_rate` for n iid draws over K categories.

    From Bretagnolle–Huber–Carol, `P(||p_hat - p||_1 >= eps) <= 2^K exp(-n eps^2 / 2)`; solving
    `2^K exp(-n eps^2 / 2) = rate` gives `eps = sqrt(2 (K log 2 + log(1/rate)) / n)` and `t = eps / 2`.
    """
    rate = _check_rate(false_failure_rate)
    return 0.5 * math.sqrt(2.0 * (num_categories * math.log(2.0) + math.log(1.0 / rate)) / num_samples)


def total_variation_min_detectable(
    num_samples: int, num_categories: int, false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE,
    power: float = DEFAULT_POWER,
) -> float:
    """Smallest TV distance that `total_variation_check` detects with probability >= `power`.

    Mathematics.  Let q be the sampler's law and p_hat the empirical law of n draws from q.  By the
    triangle inequality `TV(p_hat, p) >= TV(q, p) - TV(p_hat, q)`, and by Bretagnolle–Huber–Carol the
    deviation `TV(p_hat, q)` exceeds `t(n, K, 1 - power)` with probability <= 1 - power, where
    `t = total_variation_threshold`.  So when `TV(q, p) >= t(n, K, rate) + t(n, K, 1 - power)` the
    statistic reaches the threshold `t(n, K, rate)` (and the check fails) with probability >= `power`.
    This is rigorous at every n (K counts the categories of q and p together) but conservative: the
    check usually detects smaller distances, because the BHC bound is loose.
    """
    power = _check_power(power)
    n = _count("num_samples", num_samples)
    categories = _count("num_categories", num_categories)
    return total_variation_threshold(n, categories, false_failure_rate) + total_variation_threshold(
        n, categories, 1.0 - power
    )


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

    Power: `min_detectable_tv` in the result (and the message) is `total_variation_min_detectable`: a
    sampler at TV distance >= it fails with probability >= 90% (conservative).
    """
    rate = _check_rate(false_failure_rate)
    counts, pmf, outside = _counts_and_pmf(samples_counts, probabilities)
    n = int(counts.sum()) + outside
    statistic = float(0.5 * (np.abs(counts / n - pmf).sum() + outside / n))
    categories = int(((pmf > 0) | (counts > 0)).sum()) + (1 if outside else 0)
    threshold = total_variation_threshold(n, categories, rate)
    impossible = int(counts[pmf == 0].sum())
    passed = statistic < threshold and outside == 0 and impossible == 0
    min_detectable = total_variation_min_detectable(n, categories, rate)
    verdict = "passed" if passed else "FAILED"
    message = (
        f"total-variation check {verdict}: TV = {statistic:.4g}, threshold {threshold:.4g} "
        f"(n = {n}, K = {categories}, false-failure rate {rate:g}); "
        f"detects TV >= {min_detectable:.3g} with power >= 0.9"
    )
    if outside:
        message += f"; {outside} draws fell outside the support"
    if impossible:
        message += f"; {impossible} draws hit categories of probability zero"
    return TotalVariationResult(statistic, threshold, rate, n, categories, min_detectable, passed, message)
