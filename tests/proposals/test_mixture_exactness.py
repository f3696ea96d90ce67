"""Mixtures and cycles of suffix kernels with different proposal laws leave p^alpha invariant.

The backward term `log q(x | x')` of a suffix move must be under the proposing kernel's own law.
A sequence's cached `log_q` is under whichever law drew each token, so before the fix a mixture of
kernels at proposal temperatures 0.25 and 1.0 used one kernel's token probabilities in the other's
ratio: on 60,000 chains started at exact p^4 draws, 4 steps moved the law by TV ≈ 0.025 (chi-square
p ≈ 1e-114 on the review's toy; TV ≈ 0.010, p ≈ 2e-19 on the trigram toy here).  Each test below starts that many chains at exact draws and checks the law after the
steps with a chi-square test at false-failure rate 1e-4; the companion test re-creates the old
behaviour (cached `log_q` whatever its law) and must be rejected by the same check.

Power: with ~60 cells of expected count >= 5 and 60,000 draws, a TV shift of 0.025 gives a
chi-square statistic of order 60,000 * sum (dp)^2 / p, hundreds of standard deviations above the
threshold; shifts of TV ≈ 0.01 are still detected (the conservation tests of single kernels, with
20,000 draws, pass at TV ≤ 0.004).  Stated by the check itself: with 60,000 chains (16 pooled bins)
it detects TV 0.014 over the bins with probability >= 0.9 (asserted below, <= 0.02).  `MixtureProposal`
is checked the same way from exact draws at TV 0.02 (`chains_to_detect`); its end-to-end runs through
both drivers (two stages of 30 MH steps) use 6000 chains and detect TV 0.042.
"""

from __future__ import annotations

import pytest

from mcmc_llm import Cycle, MetropolisHastings, Mixture
from mcmc_llm.core.random import make_generator
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.exact import power_law, sample_exact
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.proposals import two_phase as two_phase_module
from mcmc_llm.proposals.mixture import MixtureProposal
from mcmc_llm.proposals.suffix import SuffixResampling
from mcmc_llm.targets.sequence import PowerTarget
from mcmc_llm.testing import chi_square_check, conservation_check, counts_from_samples
from tests.power_helpers import FALSE_FAILURE_RATE, TV_RESOLUTION, chains_to_detect

N, ALPHA, CHAINS, STEPS = 4, 4.0, 60_000, 4
TEMPERATURES = (0.25, 1.0)


@pytest.fixture(scope="module")
def lm():
    return load_toy("trigram")


def _kernels(lm, cut_rules=("uniform", "uniform"), top_k=(None, None)):
    return [
        MetropolisHastings(PowerTarget(ALPHA, N), SuffixResampling(lm, SamplingRule(tau, k), cut, N))
        for tau, cut, k in zip(TEMPERATURES, cut_rules, top_k)
    ]


def _exact_start(lm, seed=31, chains=CHAINS):
    law = power_law(lm, N, ALPHA)
    draws = sample_exact(law, make_generator(seed), chains)
    start = SequenceBatch.from_sequences(lm, SamplingRule(TEMPERATURES[0]), TokenBatch.from_lists([[]] * chains), draws, capacity=N)
    return law, start


def _conserved(kernel, law, start):
    return conservation_check(kernel, start, lambda b: map(tuple, b.to_lists()), law.probs(), law.sequences, seed=32,
                              false_failure_rate=FALSE_FAILURE_RATE, num_steps=STEPS)


def test_mixture_of_temperatures_keeps_the_power_law(lm):
    law, start = _exact_start(lm)
    result = _conserved(Mixture(_kernels(lm), [0.5, 0.5]), law, start)
    assert result.passed and result.acceptance_rate > 0.2, result.message
    assert result.min_detectable_tv <= TV_RESOLUTION, result.message


def test_cycle_of_temperatures_truncations_and_cut_rules_keeps_the_power_law(lm):
    law, start = _exact_start(lm)
    kernels = _kernels(lm, cut_rules=("priority", "uniform"), top_k=(None, 3))
    result = _conserved(Cycle(*kernels), law, start)
    assert result.passed and result.acceptance_rate > 0.2, result.message
    assert result.min_detectable_tv <= TV_RESOLUTION, result.message


def test_the_old_cached_log_q_makes_the_mixture_biased(lm, monkeypatch):
    """Companion: the backward term from the cached `log_q`, whichever law drew the tokens (the bug)."""
    monkeypatch.setattr(two_phase_module, "under_law", lambda position, sampler: position)
    law, start = _exact_start(lm)
    result = _conserved(Mixture(_kernels(lm), [0.5, 0.5]), law, start)
    assert not result.passed, result.message
    assert result.p_value < 1e-10, result.message  # measured: p ≈ 2e-19, TV ≈ 0.010


def test_mixture_proposal_conserves_the_power_law_from_exact_draws(lm):
    """`MixtureProposal` of the two temperatures inside one MH kernel, from exact draws, at TV 0.02."""
    law = power_law(lm, N, ALPHA)
    law, start = _exact_start(lm, seed=34, chains=chains_to_detect(law.probs()))
    proposal = MixtureProposal([SuffixResampling(lm, SamplingRule(tau), "uniform", N) for tau in TEMPERATURES], [0.5, 0.5])
    result = conservation_check(MetropolisHastings(PowerTarget(ALPHA, N), proposal), start,
                                lambda b: map(tuple, b.to_lists()), law.probs(), law.sequences, seed=35,
                                false_failure_rate=FALSE_FAILURE_RATE, num_steps=2)
    assert result.passed and result.acceptance_rate > 0.2, result.message
    assert result.min_detectable_tv <= TV_RESOLUTION, result.message


@pytest.mark.parametrize("batching", ["continuous", "lockstep"])
def test_mixture_proposal_reaches_the_power_law_in_power_sample(lm, batching):
    """`MixtureProposal` is a two-phase suffix proposal, so it runs in both drivers (pre-fetching included)."""
    rules = [SamplingRule(tau) for tau in TEMPERATURES]

    def mixture(stage):
        return MixtureProposal([SuffixResampling(lm, rule, "uniform", stage.cap) for rule in rules], [0.5, 0.5])

    config = PowerSamplerConfig(alpha=ALPHA, block_size=2, max_new_tokens=N, mcmc_steps=30, batching=batching)
    result = power_sample(lm, [[]], config, chains_per_prompt=6000, seed=33, proposal=mixture)
    law = power_law(lm, N, ALPHA)
    check = chi_square_check(counts_from_samples(map(tuple, result.sequences()), law.sequences), law.probs(), FALSE_FAILURE_RATE)
    assert check.passed, check.message
    assert check.min_detectable_tv <= 0.045, check.message  # 6000 chains; TV 0.02 in the conservation test
    assert set(result.trace.stats["component"].ravel().tolist()) == {0.0, 1.0}
