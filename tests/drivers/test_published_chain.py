"""The published chain (`ratio="reference"`) and the exact finite-N law of block-wise MH.

`mcmc_llm.diagnostics.chain_law` computes the output law of Algorithm 1 after N MH steps per
stage by composing explicit transition matrices: an implementation independent of the samplers.
The drivers' final states (independent chains, so iid draws of that law) are compared with it by
a chi-square test at false-failure rate 1e-4 (`tests.power_helpers.FALSE_FAILURE_RATE`).  At
N = 2 the law is far from stationary, so the test checks the finite-N law itself: extensions,
stage caps, the proposal length rule, the ratio and the early stop.  Companion tests show the
same check rejecting each chain against the other's law.

Power: the chains that validate a driver against its law are sized by `chains_to_detect` (28,000 to
32,000 chains, two MH steps per stage) so that the check detects a TV distance of 0.02 over its pooled
bins with probability >= 0.9 (asserted); the companion tests keep 20,000 chains.
"""

from __future__ import annotations

import pytest

from mcmc_llm.diagnostics.chain_law import chain_law
from mcmc_llm.diagnostics.exact import total_variation
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.exact import power_law
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.testing import chi_square_check, counts_from_samples
from tests.power_helpers import FALSE_FAILURE_RATE, TV_RESOLUTION, chains_to_detect

MODEL, T, B, ALPHA, STEPS, CHAINS = "trigram", 4, 2, 4.0, 2, 20_000


@pytest.fixture(scope="module")
def lm():
    return load_toy(MODEL)


@pytest.fixture(scope="module")
def laws(lm):
    return {chain: chain_law(lm, alpha=ALPHA, block_size=B, max_new_tokens=T, mcmc_steps=STEPS, chain=chain)
            for chain in ("exact", "published", "reference")}


def _draws(lm, ratio: str, seed: int, batching: str = "lockstep", chains: int = CHAINS) -> list[tuple[int, ...]]:
    config = PowerSamplerConfig(alpha=ALPHA, block_size=B, max_new_tokens=T, mcmc_steps=STEPS, ratio=ratio, batching=batching)
    return [tuple(s) for s in power_sample(lm, [[]], config, chains_per_prompt=chains, seed=seed).sequences()]


def _chains_for(law) -> int:
    """Chains for which `_check` against `law` detects TV_RESOLUTION with power >= 0.9."""
    return chains_to_detect([law[s] for s in sorted(law)])


def _check(draws, law):
    support = sorted(law)
    return chi_square_check(counts_from_samples(draws, support), [law[s] for s in support], FALSE_FAILURE_RATE)


@pytest.mark.parametrize("ratio, batching", [("exact", "lockstep"), ("exact", "continuous"), ("published", "continuous"),
                                              ("reference", "lockstep")])
def test_drivers_match_the_exact_finite_n_law(lm, laws, ratio, batching):
    law = laws["exact" if ratio == "exact" else ratio]
    check = _check(_draws(lm, ratio, seed=21, batching=batching, chains=_chains_for(law)), law)
    assert check.passed, check.message
    assert check.min_detectable_tv <= TV_RESOLUTION, check.message


def test_the_check_tells_the_published_chain_from_the_exact_one(lm, laws):
    reference = _draws(lm, "reference", seed=22)
    exact = _draws(lm, "exact", seed=22)
    assert not _check(reference, laws["exact"]).passed
    assert not _check(exact, laws["reference"]).passed


def test_the_check_tells_the_published_ratio_from_the_exact_chain(lm):
    """The ratio-only copy is closer to the exact chain (TV 0.004 at N = 2); at N = 10 the laws are
    0.04 apart and the check separates them, while each chain still matches its own law."""
    config = PowerSamplerConfig(alpha=ALPHA, block_size=B, max_new_tokens=T, mcmc_steps=10, ratio="published")
    law = {chain: chain_law(lm, alpha=ALPHA, block_size=B, max_new_tokens=T, mcmc_steps=10, chain=chain)
           for chain in ("exact", "published")}
    chains = _chains_for(law["published"])
    draws = [tuple(s) for s in power_sample(lm, [[]], config, chains_per_prompt=chains, seed=23).sequences()]
    own = _check(draws, law["published"])
    assert own.passed and own.min_detectable_tv <= TV_RESOLUTION, own.message
    assert not _check(draws, law["exact"]).passed


def test_exact_chain_law_reaches_p_alpha_and_the_published_chain_leaves_s_n(lm):
    target = power_law(lm, T, ALPHA).as_dict()
    exact = chain_law(lm, alpha=ALPHA, block_size=B, max_new_tokens=T, mcmc_steps=200, chain="exact")
    assert total_variation(exact, target) < 1e-3
    reference = chain_law(lm, alpha=ALPHA, block_size=B, max_new_tokens=T, mcmc_steps=200, chain="reference")
    unterminated = sum(mass for sequence, mass in reference.items() if sequence not in target)
    assert unterminated > 0.5, unterminated  # most of its mass is on unterminated sequences shorter than T
    assert total_variation(reference, target) > 0.5


def test_reference_ratio_validation():
    with pytest.raises(ValueError, match="finite alpha"):
        PowerSamplerConfig(alpha=float("inf"), block_size=2, max_new_tokens=4, ratio="reference")
    assert PowerSamplerConfig(alpha=4.0, block_size=2, max_new_tokens=4, ratio="reference").sampling_rule().top_k == 50
    assert PowerSamplerConfig(alpha=4.0, block_size=2, max_new_tokens=4, ratio="reference", top_k=7).sampling_rule().top_k == 7
