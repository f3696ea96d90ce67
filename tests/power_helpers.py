"""Shared set-up for the power-sampler tests: run a sampler, compare with an exact law."""

from __future__ import annotations

from mcmc_llm.lm.exact.support import ExactLaw
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.testing import ChiSquareResult, chi_square_check, counts_from_samples, samples_to_detect_tv_for_pmf

FALSE_FAILURE_RATE = 1e-4  # per check; every check below is seeded, so the suite is deterministic
TV_RESOLUTION = 0.02  # exactness checks on cheap batched paths detect a TV distance this large with power >= 0.9


def chains_to_detect(probabilities, tv: float = TV_RESOLUTION) -> int:
    """Independent draws for which the chi-square check against `probabilities` (at FALSE_FAILURE_RATE) has
    `min_detectable_tv <= tv`, with the bins the check uses after pooling (`samples_to_detect_tv_for_pmf`)."""
    return samples_to_detect_tv_for_pmf(tv, probabilities, FALSE_FAILURE_RATE)


def sampled_law_check(lm, law: ExactLaw, config: PowerSamplerConfig, chains: int, seed: int, prompt=()) -> ChiSquareResult:
    """Chi-square test of the final sequences of `chains` independent chains against `law`.

    The result's `min_detectable_tv` is the TV distance (over the pooled bins) detected with power >= 0.9;
    pass `chains=chains_to_detect(law.probs())` to bring it to TV_RESOLUTION."""
    result = power_sample(lm, [list(prompt)], config, chains_per_prompt=chains, seed=seed)
    counts = counts_from_samples([tuple(s) for s in result.sequences()], law.sequences)
    return chi_square_check(counts, law.probs(), FALSE_FAILURE_RATE)
