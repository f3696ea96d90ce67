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
* `check_kernel` (`mcmc_llm.testing.kernel_check`): a power-sampling kernel (a proposal factory or a
  cut rule) against the exact power law of a toy LM: invariance, sampling in both drivers, identical
  chains; returns a `KernelCheckResult` with `passed`, every check and a `report` stating each check's
  min detectable TV.  Imported on first use (it loads torch and the samplers; the rest does not).

The count-based checks assume independent draws.  For MCMC output, use one draw per independent chain
(e.g. the last one), not every draw of a chain; `mcse_moment_check` is the one built for correlated draws.

Power.  Every result also states the smallest error its check detects with probability >= 90% at its
sample size, bins and false-failure rate, and prints it in `message`; the same numbers can be computed
before drawing samples, so a test can size itself:

* chi-square (`ChiSquareResult.min_detectable_tv`, `chi_square_min_detectable_tv(n, bins, rate, power)`,
  inverse `samples_to_detect_tv(tv, bins, rate, power)`; `samples_to_detect_tv_for_pmf(tv, pmf, rate)`
  sizes n for the bins the check will use after pooling, `chi_square_num_bins(pmf, n)`): under a law q
  the Pearson statistic is approximately noncentral chi-square, dof = bins - 1, noncentrality
  `lambda = n sum_i (q_i - p_i)^2 / p_i`.  Cauchy–Schwarz gives `lambda >= 4 n delta^2` at TV distance
  delta (tight when |q_i - p_i| is proportional to p_i), so the power is at least
  `P(ncx2(dof, 4 n delta^2) > chi2.isf(rate, dof))`; the min detectable TV is the delta where this equals
  the power (n = 6000, 15 bins, rate 1e-4: 0.044).
  The guarantee is about the TV between the laws *after pooling into bins*: a difference inside a pooled
  bin is invisible.
* total variation (`TotalVariationResult.min_detectable_tv`, `total_variation_min_detectable(n, K, rate,
  power)`): `t(n, K, rate) + t(n, K, 1 - power)` with `t = total_variation_threshold`, since the empirical
  TV is at least the true TV minus a deviation that exceeds `t(n, K, 1 - power)` with probability
  <= 1 - power.  Rigorous and conservative.
* moment (`MomentResult.min_detectable_shift` in the moment's units, `min_detectable_shift_mcse` in MCSE
  units, `mcse_min_detectable_shift(mcse, rate, power, num_dims)`): `(z_{1 - rate/(2D)} + z_power) * MCSE`.
* conservation (`ConservationResult.min_detectable_tv`): a chi-square on the C chains, same formula.
"""

from mcmc_llm.testing.chains import (
    ConservationResult, MomentResult, conservation_check, effective_sample_size_of_mean, mcse_min_detectable_shift,
    mcse_moment_check,
)
from mcmc_llm.testing.discrete import (
    DEFAULT_FALSE_FAILURE_RATE, DEFAULT_POWER, ChiSquareResult, TotalVariationResult, chi_square_check,
    chi_square_min_detectable_tv, chi_square_noncentrality_for_power, chi_square_num_bins, counts_from_samples,
    samples_to_detect_tv, samples_to_detect_tv_for_pmf, total_variation_check, total_variation_min_detectable,
    total_variation_threshold,
)

_KERNEL_CHECK = ("KernelCheckResult", "SamplingCheck", "check_kernel")

__all__ = [
    *_KERNEL_CHECK, "DEFAULT_FALSE_FAILURE_RATE", "DEFAULT_POWER", "ChiSquareResult", "ConservationResult", "MomentResult",
    "TotalVariationResult", "assert_chi_square", "assert_conservation", "assert_mcse_moment",
    "assert_total_variation", "chi_square_check", "chi_square_min_detectable_tv",
    "chi_square_noncentrality_for_power", "chi_square_num_bins", "conservation_check", "counts_from_samples",
    "effective_sample_size_of_mean", "mcse_min_detectable_shift", "mcse_moment_check", "samples_to_detect_tv",
    "samples_to_detect_tv_for_pmf",
    "total_variation_check", "total_variation_min_detectable", "total_variation_threshold",
]


def __getattr__(name):
    if name in _KERNEL_CHECK:
        from mcmc_llm.testing import kernel_check

        return getattr(kernel_check, name)
    raise AttributeError(f"module 'mcmc_llm.testing' has no attribute {name!r}")


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

