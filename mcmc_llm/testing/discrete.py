"""Checks of independent draws over a finite set against an exact pmf: chi-square and total variation.

Every check has a stated false-failure rate (default 1e-4) and returns a frozen result with
`passed`, the statistic, its threshold or p-value and a readable `message`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
import torch
from scipy import stats

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
