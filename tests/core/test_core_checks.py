"""The statistical checks of `mcmc_llm.testing` themselves: formulas, calibration, power and input errors.

Calibration tests run a check many times on draws from the exact law, at a large false-failure rate
(0.05) so the rejection count is informative, and compare that count with its Binomial law.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from mcmc_llm import testing
from mcmc_llm.testing import (
    assert_chi_square,
    assert_mcse_moment,
    assert_total_variation,
    chi_square_check,
    counts_from_samples,
    mcse_moment_check,
    total_variation_check,
    total_variation_threshold,
)

PMF = np.array([0.02, 0.05, 0.1, 0.2, 0.25, 0.18, 0.12, 0.08])


def binomial_band(trials: int, rate: float, tail: float = 1e-4) -> tuple[float, float]:
    """Central interval holding a Binomial(trials, rate) count with probability >= 1 - 2 * tail."""
    return stats.binom.ppf(tail, trials, rate), stats.binom.isf(tail, trials, rate)


# ---------------------------------------------------------------- counts_from_samples


def test_counts_from_samples_tuples_and_outside_bin():
    support = [(1, 2), (3,), ()]
    samples = [(1, 2), (3,), (1, 2), (9, 9), [3], ()]
    counts = counts_from_samples(samples, support)
    assert counts.tolist() == [2, 2, 1, 1]


def test_counts_from_samples_reads_tensor_rows():
    samples = torch.tensor([[0, 1], [0, 1], [1, 1]])
    assert counts_from_samples(samples, [(0, 1), (1, 1)]).tolist() == [2, 1, 0]
    assert counts_from_samples(torch.tensor([2, 0, 0, 5]), range(3)).tolist() == [2, 0, 1, 1]


def test_counts_from_samples_rejects_duplicate_support():
    with pytest.raises(ValueError, match=re.escape("support lists (1, 2) twice")):
        counts_from_samples([], [(1, 2), (1, 2)])


# ---------------------------------------------------------------- chi-square


def test_chi_square_passes_on_exact_counts_and_reports_tv():
    counts = np.round(PMF * 10_000).astype(int)
    result = assert_chi_square(counts, PMF)
    assert result.passed and result.p_value > 0.99
    assert result.num_samples == 10_000 and result.degrees_of_freedom == 7
    assert result.total_variation == pytest.approx(0.0, abs=1e-12)
    assert "passed" in result.message


def test_chi_square_fails_on_wrong_pmf_with_message():
    counts = np.random.default_rng(0).multinomial(5_000, PMF)
    wrong = PMF[::-1]
    result = chi_square_check(counts, wrong)
    assert not result.passed and result.p_value < 1e-4
    with pytest.raises(AssertionError, match="chi-square check FAILED"):
        assert_chi_square(counts, wrong)


def test_chi_square_fails_on_draws_outside_support():
    support = list(range(len(PMF)))
    draws = np.random.default_rng(1).choice(len(PMF), size=5_000, p=PMF).tolist() + [42]
    counts = counts_from_samples(draws, support)
    assert counts[-1] == 1
    result = chi_square_check(counts, PMF)
    assert not result.passed and result.outside_count == 1
    assert "1 draws fell outside the support" in result.message
    # the same draws without the stray one pass
    assert chi_square_check(counts[:-1], PMF).passed


def test_chi_square_fails_on_zero_probability_category():
    pmf = np.array([0.5, 0.5, 0.0])
    result = chi_square_check([500, 499, 1], pmf)
    assert not result.passed
    assert "1 draws hit categories of probability zero" in result.message
    assert chi_square_check([500, 500, 0], pmf).passed


def test_chi_square_pools_small_expected_counts():
    # 4 large cells and 20 tiny ones: the tiny ones (expected 1 each at n=1000) share one bin
    pmf = np.concatenate([np.full(4, 0.245), np.full(20, 0.001)])
    counts = np.concatenate([np.full(4, 245), np.ones(20, dtype=int)])
    result = chi_square_check(counts, pmf)
    assert result.num_bins == 5 and result.degrees_of_freedom == 4
    assert result.statistic == pytest.approx(0.0, abs=1e-9)
    assert result.passed


def test_chi_square_pooled_bin_absorbs_next_cell_until_large_enough():
    pmf = np.array([0.001, 0.002, 0.497, 0.5])  # at n=1000 the small cells hold 3 expected draws
    result = chi_square_check([1, 2, 497, 500], pmf)
    assert result.num_bins == 2  # {0, 1, 2} pooled, {3}


def test_chi_square_calibration():
    rng = np.random.default_rng(2024)
    trials, rate = 1000, 0.05
    counts = rng.multinomial(2_000, PMF, size=trials)
    failures = sum(not chi_square_check(row, PMF, false_failure_rate=rate).passed for row in counts)
    low, high = binomial_band(trials, rate)
    assert low <= failures <= high, f"{failures} false failures in {trials} trials at rate {rate}"


def test_chi_square_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"probabilities must sum to 1, got a sum of 0\.9"):
        chi_square_check([1, 2], [0.4, 0.5])
    with pytest.raises(ValueError, match=re.escape("counts has shape (3,); expected (1,) or (2,)")):
        chi_square_check([1, 2, 3], [1.0])
    with pytest.raises(ValueError, match=re.escape("counts must be non-negative integers, got [1, -2]")):
        chi_square_check([1, -2], [0.5, 0.5])
    with pytest.raises(ValueError, match=re.escape("probabilities must be finite and non-negative, got [1.5, -0.5]")):
        chi_square_check([1, 1], [1.5, -0.5])
    with pytest.raises(ValueError, match="false_failure_rate must lie strictly between 0 and 1, got 0"):
        chi_square_check([1, 1], [0.5, 0.5], false_failure_rate=0)
    with pytest.raises(ValueError, match="counts are all zero"):
        chi_square_check([0, 0], [0.5, 0.5])


# ---------------------------------------------------------------- total variation


def test_total_variation_threshold_formula():
    n, k, rate = 20_000, 8, 1e-4
    expected = 0.5 * math.sqrt(2 * (k * math.log(2) + math.log(1 / rate)) / n)
    assert total_variation_threshold(n, k, rate) == pytest.approx(expected, rel=1e-12)
    result = total_variation_check(np.random.default_rng(3).multinomial(n, PMF), PMF, rate)
    assert result.threshold == pytest.approx(expected, rel=1e-12)
    assert result.num_categories == k


def test_total_variation_counts_observed_zero_mass_and_outside_categories():
    result = total_variation_check([500, 499, 1, 3], [0.5, 0.5, 0.0])
    assert result.num_categories == 4  # two with mass, one observed without mass, the outside bin
    assert not result.passed
    assert "3 draws fell outside the support" in result.message
    assert "1 draws hit categories of probability zero" in result.message


def test_total_variation_passes_exact_and_fails_shifted():
    rng = np.random.default_rng(4)
    assert_total_variation(rng.multinomial(20_000, PMF), PMF)
    shifted = 0.9 * PMF + 0.1 * np.eye(len(PMF))[0]  # TV(shifted, PMF) = 0.098
    result = total_variation_check(rng.multinomial(20_000, shifted), PMF)
    assert not result.passed and result.statistic > result.threshold
    with pytest.raises(AssertionError, match="total-variation check FAILED"):
        assert_total_variation(rng.multinomial(20_000, shifted), PMF)


def test_total_variation_false_failures_stay_below_rate():
    rng = np.random.default_rng(5)
    trials, rate = 1000, 0.05
    counts = rng.multinomial(500, PMF, size=trials)
    failures = sum(not total_variation_check(row, PMF, false_failure_rate=rate).passed for row in counts)
    assert failures <= binomial_band(trials, rate)[1]  # the bound is conservative: usually zero failures


# ---------------------------------------------------------------- MCSE moment check


def ar1_draws(rng, replicates, chains, draws, rho):
    """Stationary AR(1) chains with unit marginal variance, shape (replicates, chains, draws)."""
    out = np.empty((replicates, chains, draws))
    out[..., 0] = rng.standard_normal((replicates, chains))
    innovation = math.sqrt(1 - rho**2)
    for t in range(1, draws):
        out[..., t] = rho * out[..., t - 1] + innovation * rng.standard_normal((replicates, chains))
    return out


def test_mcse_moment_check_calibrated_on_correlated_draws():
    rng = np.random.default_rng(6)
    trials, rate = 300, 0.05
    draws = ar1_draws(rng, trials, chains=4, draws=500, rho=0.9)
    failures = sum(not mcse_moment_check(d, 0.0, false_failure_rate=rate).passed for d in draws)
    low, high = binomial_band(trials, rate)
    assert low <= failures <= high, f"{failures} false failures in {trials} trials at rate {rate}"
    # the naive iid standard error, ignoring the autocorrelation, would fail far more often
    naive_z = draws.mean(axis=(1, 2)) / (draws.std(axis=(1, 2), ddof=1) / math.sqrt(4 * 500))
    assert np.mean(np.abs(naive_z) > stats.norm.ppf(1 - rate / 2)) > 0.4


def test_mcse_moment_check_multidim_bonferroni_and_failure():
    rng = np.random.default_rng(7)
    draws = rng.standard_normal((8, 400, 3)) + np.array([0.0, 1.0, -2.0])
    result = assert_mcse_moment(draws, [0.0, 1.0, -2.0])
    assert len(result.z_scores) == 3 and len(result.ess) == 3
    assert result.threshold == pytest.approx(stats.norm.ppf(1 - 1e-4 / 6))
    bad = mcse_moment_check(draws, [0.0, 1.2, -2.0])
    assert not bad.passed and "worst dim 1" in bad.message
    with pytest.raises(AssertionError, match="MCSE moment check FAILED"):
        assert_mcse_moment(draws, [0.0, 1.2, -2.0])


def test_mcse_moment_check_accepts_tensors_and_constant_draws():
    draws = torch.full((2, 10), 3.0, dtype=torch.float64)
    assert mcse_moment_check(draws, 3.0).passed
    assert not mcse_moment_check(draws, 2.0).passed


def test_mcse_moment_check_rejects_bad_shapes():
    message = "draws must have shape (chain, draw) or (chain, draw, dim), got (10,)"
    with pytest.raises(ValueError, match=re.escape(message)):
        mcse_moment_check(np.zeros(10), 0.0)
    with pytest.raises(ValueError, match="expected_mean has 3 values; the draws have 2 dimensions"):
        mcse_moment_check(np.zeros((2, 10, 2)), [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="need at least 4 draws per chain to estimate an ESS, got 3"):
        mcse_moment_check(np.zeros((2, 3)), 0.0)


def test_effective_sample_size_of_mean_near_n_for_iid_draws():
    ess = testing.effective_sample_size_of_mean(np.random.default_rng(8).standard_normal((4, 1000, 2)))
    assert ess.shape == (2,)
    assert np.all((ess > 3000) & (ess < 5500))
