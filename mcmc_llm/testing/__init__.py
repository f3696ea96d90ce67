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

from mcmc_llm.testing.chains import (
    ConservationResult, MomentResult, conservation_check, effective_sample_size_of_mean, mcse_moment_check,
)
from mcmc_llm.testing.discrete import (
    DEFAULT_FALSE_FAILURE_RATE, ChiSquareResult, TotalVariationResult, chi_square_check, counts_from_samples,
    total_variation_check, total_variation_threshold,
)

__all__ = [
    "DEFAULT_FALSE_FAILURE_RATE", "ChiSquareResult", "ConservationResult", "MomentResult", "TotalVariationResult",
    "assert_chi_square", "assert_conservation", "assert_mcse_moment", "assert_total_variation", "chi_square_check",
    "conservation_check", "counts_from_samples", "effective_sample_size_of_mean", "mcse_moment_check",
    "total_variation_check", "total_variation_threshold",
]


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
