"""Shared set-up for the power-sampler tests: run a sampler, compare with an exact law."""

from __future__ import annotations

from mcmc_llm.lm.support import ExactLaw
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.testing import ChiSquareResult, chi_square_check, counts_from_samples

FALSE_FAILURE_RATE = 1e-4  # per check; every check below is seeded, so the suite is deterministic


def sampled_law_check(lm, law: ExactLaw, config: PowerSamplerConfig, chains: int, seed: int, prompt=()) -> ChiSquareResult:
    """Chi-square test of the final sequences of `chains` independent chains against `law`."""
    result = power_sample(lm, [list(prompt)], config, chains_per_prompt=chains, seed=seed)
    counts = counts_from_samples([tuple(s) for s in result.sequences()], law.sequences)
    return chi_square_check(counts, law.probs(), FALSE_FAILURE_RATE)
