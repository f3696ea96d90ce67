"""The power statements of `mcmc_llm.testing`: formulas, the audit's value, and simulations.

Each check reports the smallest error it detects with probability >= 90% (`min_detectable_tv`,
`min_detectable_shift`).  The simulations put a sampler exactly at that error and count how often the
check rejects over 400 seeded trials, at a large false-failure rate (1e-2) and moderate n so they are
cheap.  The count must clear the lower 1e-4 quantile of Binomial(400, 0.9): a check whose power is
really >= 0.9 fails this test with probability <= 1e-4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mcmc_llm.testing import (
    chi_square_check,
    chi_square_min_detectable_tv,
    chi_square_noncentrality_for_power,
    chi_square_num_bins,
    conservation_check,
    mcse_min_detectable_shift,
    mcse_moment_check,
    samples_to_detect_tv,
    samples_to_detect_tv_for_pmf,
    total_variation_check,
    total_variation_min_detectable,
    total_variation_threshold,
)
from tests.core.test_core_checks import ar1_draws

TRIALS, POWER, RATE = 400, 0.9, 1e-2
LOWEST_ACCEPTED = int(stats.binom.ppf(1e-4, TRIALS, POWER))  # 338 rejections of 400
PMF = np.array([0.02, 0.05, 0.1, 0.2, 0.25, 0.18, 0.12, 0.08])  # rows of 8 categories


def worst_case_alternative(pmf: np.ndarray, tv: float) -> np.ndarray:
    """A law q at TV distance `tv` from `pmf` with |q_i - p_i| proportional to p_i: the categories are split
    into two halves of roughly equal mass, one scaled up and one down.  This is the case where the
    Cauchy–Schwarz bound `lambda >= 4 n TV^2` is (nearly) tight, i.e. the chi-square's hardest case."""
    plus = np.zeros(pmf.size, dtype=bool)
    masses = [0.0, 0.0]  # (down, up)
    for i in np.argsort(-pmf, kind="stable"):  # greedy: largest first, into the lighter half
        half = int(masses[1] < masses[0])
        plus[i], masses[half] = bool(half), masses[half] + pmf[i]
    up, down = pmf[plus].sum(), pmf[~plus].sum()
    q = np.where(plus, pmf * (1 + tv / up), pmf * (1 - tv / down))
    assert abs(0.5 * np.abs(q - pmf).sum() - tv) < 1e-12 and q.min() >= 0 and abs(q.sum() - 1) < 1e-12
    return q


def rejections(check, rows) -> int:
    return sum(not check(row).passed for row in rows)


# ---------------------------------------------------------------- chi-square


def test_chi_square_min_detectable_tv_reproduces_the_audit():
    """n = 6000 draws, 15 pooled bins (dof 14), rate 1e-4, power 0.9: 0.044."""
    assert chi_square_min_detectable_tv(6000, 15, 1e-4, power=0.9) == pytest.approx(0.0441, abs=5e-4)
    noncentrality = chi_square_noncentrality_for_power(14, 1e-4, 0.9)
    critical = stats.chi2.isf(1e-4, 14)
    assert stats.ncx2.sf(critical, 14, noncentrality) == pytest.approx(0.9, abs=1e-9)
    assert chi_square_min_detectable_tv(6000, 15, 1e-4) == pytest.approx(math.sqrt(noncentrality / (4 * 6000)))


def test_chi_square_min_detectable_tv_moves_the_right_way():
    base = chi_square_min_detectable_tv(5000, 10, 1e-4)
    assert chi_square_min_detectable_tv(20000, 10, 1e-4) == pytest.approx(base / 2)  # 1 / sqrt(n)
    assert chi_square_min_detectable_tv(5000, 30, 1e-4) > base  # more bins, less power per bin
    assert chi_square_min_detectable_tv(5000, 10, 1e-2) < base  # a laxer test detects more
    assert chi_square_min_detectable_tv(5000, 10, 1e-4, power=0.99) > base
    assert chi_square_min_detectable_tv(5000, 1, 1e-4) == math.inf  # one bin: no power at all


def test_chi_square_result_reports_its_power():
    counts = np.random.default_rng(0).multinomial(6000, PMF)
    result = chi_square_check(counts, PMF, 1e-4)
    assert result.min_detectable_tv == pytest.approx(chi_square_min_detectable_tv(6000, 8, 1e-4))
    assert f"detects TV >= {result.min_detectable_tv:.3g} over the bins with power >= 0.9" in result.message


def test_chi_square_rejects_the_worst_case_alternative_at_its_min_detectable_tv():
    n = 2000
    tv = chi_square_min_detectable_tv(n, PMF.size, RATE)
    assert (n * PMF).min() >= 5  # no pooling: the TV over the bins is the TV
    rows = np.random.default_rng(1).multinomial(n, worst_case_alternative(PMF, tv), size=TRIALS)
    count = rejections(lambda row: chi_square_check(row, PMF, RATE), rows)
    assert LOWEST_ACCEPTED <= count, f"{count} of {TRIALS} rejections at TV {tv:.4f} (need >= {LOWEST_ACCEPTED})"
    # ... and the statement is not vacuous: at half that distance the power is clearly below 0.9
    rows = np.random.default_rng(2).multinomial(n, worst_case_alternative(PMF, tv / 2), size=TRIALS)
    assert rejections(lambda row: chi_square_check(row, PMF, RATE), rows) < 0.6 * TRIALS


def test_chi_square_power_on_many_uneven_bins():
    """30 categories of uneven mass, rate 1e-2: the statement holds off the toy pmf too."""
    pmf = np.random.default_rng(3).dirichlet(np.full(30, 5.0))
    n = 4000
    assert (n * pmf).min() >= 5
    tv = chi_square_min_detectable_tv(n, pmf.size, RATE)
    rows = np.random.default_rng(4).multinomial(n, worst_case_alternative(pmf, tv), size=TRIALS)
    count = rejections(lambda row: chi_square_check(row, pmf, RATE), rows)
    assert LOWEST_ACCEPTED <= count, f"{count} of {TRIALS} rejections at TV {tv:.4f}"


@pytest.mark.parametrize("tv, bins, rate", [(0.02, 15, 1e-4), (0.044, 15, 1e-4), (0.01, 8, 1e-2), (0.3, 2, 0.05)])
def test_samples_to_detect_tv_inverts_the_min_detectable_tv(tv, bins, rate):
    n = samples_to_detect_tv(tv, bins, rate)
    assert chi_square_min_detectable_tv(n, bins, rate) <= tv < chi_square_min_detectable_tv(n - 1, bins, rate)
    assert samples_to_detect_tv(tv, bins, rate, power=0.99) > n
    assert samples_to_detect_tv(0.044088, 15, 1e-4) == 6001  # the audit's 6000 draws, inverted


def test_samples_to_detect_tv_for_pmf_uses_the_pooled_bins():
    """120 categories, most of them tiny: the check pools them, so far fewer draws than for 120 bins suffice."""
    pmf = np.random.default_rng(11).dirichlet(np.full(120, 0.3))
    n = samples_to_detect_tv_for_pmf(0.02, pmf, 1e-4)
    bins = chi_square_num_bins(pmf, n)
    assert bins < 120 and n < samples_to_detect_tv(0.02, 120, 1e-4)
    assert chi_square_min_detectable_tv(n, bins, 1e-4) <= 0.02
    result = chi_square_check(np.random.default_rng(12).multinomial(n, pmf), pmf, 1e-4)
    assert result.num_bins == bins and result.min_detectable_tv <= 0.02
    assert chi_square_num_bins([0.5, 0.5, 0.0], 10) == 2


def test_power_arguments_are_checked():
    with pytest.raises(ValueError, match="power must lie strictly between 0 and 1"):
        chi_square_min_detectable_tv(100, 5, 1e-4, power=1.0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        chi_square_min_detectable_tv(0, 5, 1e-4)
    with pytest.raises(ValueError, match="tv must lie in"):
        samples_to_detect_tv(0.0, 5, 1e-4)
    with pytest.raises(ValueError, match="num_bins must be an integer >= 2, got 1"):
        samples_to_detect_tv(0.1, 1, 1e-4)
    with pytest.raises(ValueError, match="false_failure_rate must lie strictly between 0 and 1"):
        total_variation_min_detectable(100, 5, 2.0)


# ---------------------------------------------------------------- total variation


def test_total_variation_min_detectable_formula_and_result():
    n, k, rate = 20_000, 8, 1e-4
    expected = total_variation_threshold(n, k, rate) + total_variation_threshold(n, k, 0.1)
    assert total_variation_min_detectable(n, k, rate) == pytest.approx(expected, rel=1e-12)
    result = total_variation_check(np.random.default_rng(5).multinomial(n, PMF), PMF, rate)
    assert result.min_detectable_tv == pytest.approx(expected, rel=1e-12)
    assert "with power >= 0.9" in result.message


def test_total_variation_rejects_at_its_min_detectable_tv():
    """The bound is conservative, so the rejection count is at the top of the range."""
    n = 2000
    tv = total_variation_min_detectable(n, PMF.size, RATE)
    rows = np.random.default_rng(6).multinomial(n, worst_case_alternative(PMF, tv), size=TRIALS)
    count = rejections(lambda row: total_variation_check(row, PMF, RATE), rows)
    assert LOWEST_ACCEPTED <= count, f"{count} of {TRIALS} rejections at TV {tv:.4f}"
    # a law moving all the mass onto one category is as easily detected (the bound is distribution-free)
    weight = tv / (1 - PMF[0])
    one_cell = (1 - weight) * PMF + weight * np.eye(PMF.size)[0]
    assert 0.5 * np.abs(one_cell - PMF).sum() == pytest.approx(tv)
    rows = np.random.default_rng(7).multinomial(n, one_cell, size=TRIALS)
    assert LOWEST_ACCEPTED <= rejections(lambda row: total_variation_check(row, PMF, RATE), rows)


# ---------------------------------------------------------------- MCSE moment check


def test_mcse_min_detectable_shift_formula():
    z = stats.norm.isf(1e-4 / 2) + stats.norm.ppf(0.9)
    assert mcse_min_detectable_shift(1.0, 1e-4) == pytest.approx(z)
    assert mcse_min_detectable_shift(0.5, 1e-4) == pytest.approx(z / 2)
    bonferroni = stats.norm.isf(1e-4 / 6) + stats.norm.ppf(0.9)
    assert np.allclose(mcse_min_detectable_shift([1.0, 2.0], 1e-4, num_dims=3), [bonferroni, 2 * bonferroni])
    draws = np.random.default_rng(8).standard_normal((4, 400, 3))
    result = mcse_moment_check(draws, [0.0, 0.0, 0.0])
    assert result.min_detectable_shift_mcse == pytest.approx(result.threshold + stats.norm.ppf(0.9))
    assert np.allclose(result.min_detectable_shift, np.asarray(result.mcse) * result.min_detectable_shift_mcse)
    assert "with power >= 0.9" in result.message


def test_mcse_moment_check_rejects_at_its_min_detectable_shift():
    """AR(1) chains (rho = 0.5, so the ESS is a third of the draws): shift the mean by the min
    detectable shift for the true MCSE, sqrt((1 + rho) / (1 - rho) / draws)."""
    chains, draws, rho = 4, 500, 0.5
    true_mcse = math.sqrt((1 + rho) / (1 - rho) / (chains * draws))
    shift = mcse_min_detectable_shift(true_mcse, RATE)
    samples = ar1_draws(np.random.default_rng(9), TRIALS, chains, draws, rho)
    count = rejections(lambda d: mcse_moment_check(d + shift, 0.0, RATE), samples)
    assert LOWEST_ACCEPTED <= count, f"{count} of {TRIALS} rejections at shift {shift:.4f}"
    reported = mcse_moment_check(samples[0] + shift, 0.0, RATE).min_detectable_shift[0]
    assert reported == pytest.approx(shift, rel=0.25)  # the check's own statement, from its estimated MCSE


# ---------------------------------------------------------------- conservation


def test_conservation_reports_the_chi_square_power():
    class Stay:
        def init(self, position):
            return position

        def step(self, generator, state):
            return state, {}

    draws = np.random.default_rng(10).choice(PMF.size, size=30_000, p=PMF)
    result = conservation_check(Stay(), draws, lambda x: x.tolist(), PMF, range(PMF.size), false_failure_rate=1e-4)
    assert result.min_detectable_tv == result.chi_square.min_detectable_tv
    assert result.min_detectable_tv == pytest.approx(chi_square_min_detectable_tv(30_000, PMF.size, 1e-4))
    assert result.min_detectable_tv <= 0.02 and "power >= 0.9" in result.message
