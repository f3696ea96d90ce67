"""The block-wise power sampler reaches the exact laws of METHOD §1-3 on enumerable toy LMs.

Each check is a chi-square test over the whole support S_n with false-failure rate 1e-4 (see
`mcmc_llm.testing.chi_square_check`); chains are independent, so their final states are iid
draws from the sampler's law.  Settings (N_MCMC large against the toy's mixing time) were chosen
so the remaining non-stationarity is far below the test's resolution.  Companion tests show
the same check rejecting plain low-temperature sampling and the published ratio.

Power (TV over the pooled bins detected with probability >= 0.9, asserted in each test): the
conservation checks of every kernel, from exact draws, are sized by `chains_to_detect` to detect
TV 0.02 (~33,000 chains, two MH steps: cheap).  The end-to-end runs (two stages of N_MCMC = 40 steps)
cost ~6 s per 6000 chains on two cores, so in the default suite only uniform cuts in lock-step run at
TV 0.02; the other kernels and batchings run with 6000 chains (TV 0.044) and at TV 0.02 under
`-m slow`.  The drivers' mechanics with uniform cuts are also checked at TV 0.02 against the exact
finite-N law in `test_published_chain.py`.
"""

from __future__ import annotations

import math

import pytest

from mcmc_llm.kernels.mh import MetropolisHastings
from mcmc_llm.core.random import make_generator
from mcmc_llm.lm.exact import nested_law, power_law, sample_exact, tempered_law
from mcmc_llm.lm.generation import SamplingRule, sample_continuations
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.proposals.cut_rules import CUT_RULES, resolve_cut_rule
from mcmc_llm.proposals.published_ratio import PublishedRatioSuffix
from mcmc_llm.drivers.power import PowerSamplerConfig
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.suffix import SuffixResampling
from mcmc_llm.targets.sequence import PowerTarget
from mcmc_llm.testing import assert_conservation, chi_square_check, counts_from_samples
from tests.power_helpers import FALSE_FAILURE_RATE, TV_RESOLUTION, chains_to_detect, sampled_law_check

MODEL, N, ALPHA, BLOCK = "trigram", 4, 3.0, 2
EXACT_KERNELS = ("uniform", "restart", "priority", "entropy")
SMOKE_CHAINS, SMOKE_TV = 6000, 0.045  # end-to-end runs of the default suite: 6000 chains detect TV 0.044


@pytest.fixture(scope="module")
def lm():
    return load_toy(MODEL)


_FULL_POWER = pytest.mark.slow  # ~35,000 chains x 80 MH steps: 20-40 s each on two cores


@pytest.mark.parametrize(
    "kernel, batching, resolution",
    [("uniform", "lockstep", TV_RESOLUTION)]
    + [(kernel, "continuous", SMOKE_TV) for kernel in EXACT_KERNELS]
    + [pytest.param(kernel, "continuous", TV_RESOLUTION, marks=_FULL_POWER) for kernel in EXACT_KERNELS],
)
def test_exact_kernels_reach_the_power_law(lm, kernel, batching, resolution):
    """Both schedules: asynchronous chains (the default) and all chains stepping together."""
    config = PowerSamplerConfig(alpha=ALPHA, block_size=BLOCK, max_new_tokens=N, mcmc_steps=40, cut_rule=kernel, batching=batching)
    law = power_law(lm, N, ALPHA)
    chains = chains_to_detect(law.probs()) if resolution == TV_RESOLUTION else SMOKE_CHAINS
    check = sampled_law_check(lm, law, config, chains=chains, seed=11)
    assert check.passed, check.message
    assert check.min_detectable_tv <= resolution, check.message


def test_within_block_cuts_reach_the_nested_law_not_the_power_law(lm):
    """End-to-end at 6000 chains (detects TV 0.044); the within-block kernel's conservation of p^alpha
    is checked at TV 0.02 below."""
    config = PowerSamplerConfig(alpha=ALPHA, block_size=BLOCK, max_new_tokens=N, mcmc_steps=40, cut_rule="within-block")
    nested = sampled_law_check(lm, nested_law(lm, N, ALPHA, BLOCK), config, chains=SMOKE_CHAINS, seed=12)
    assert nested.passed, nested.message
    assert nested.min_detectable_tv <= SMOKE_TV, nested.message
    power = sampled_law_check(lm, power_law(lm, N, ALPHA), config, chains=6000, seed=12)
    assert not power.passed, "within-block cuts should not reach p^alpha here: " + power.message


def test_low_temperature_sampling_is_rejected(lm):
    """Plain autoregressive sampling at tau = 1/alpha is not p^alpha: the same check must fail.  The
    draws are cheap, so the sanity check against the tempered law is sized to detect TV 0.02."""
    tempered = tempered_law(lm, N, 1 / ALPHA)
    chains = chains_to_detect(tempered.probs())
    contexts = TokenBatch.from_lists([[]] * chains)
    drawn = sample_continuations(lm, contexts, N, SamplingRule(1 / ALPHA), make_generator(13))
    law = power_law(lm, N, ALPHA)
    check = chi_square_check(counts_from_samples(map(tuple, drawn.tokens.to_lists()), law.sequences), law.probs(), FALSE_FAILURE_RATE)
    assert not check.passed, check.message
    sanity = chi_square_check(counts_from_samples(map(tuple, drawn.tokens.to_lists()), tempered.sequences), tempered.probs(), FALSE_FAILURE_RATE)
    assert sanity.passed, "the low-temperature draws should follow the tempered law: " + sanity.message
    assert sanity.min_detectable_tv <= TV_RESOLUTION, sanity.message


def test_published_ratio_is_rejected(lm):
    """The reference code's ratio (current suffix truncated, cut term dropped) is biased."""
    config = PowerSamplerConfig(alpha=ALPHA, block_size=BLOCK, max_new_tokens=N, mcmc_steps=40, ratio="published")
    check = sampled_law_check(lm, power_law(lm, N, ALPHA), config, chains=6000, seed=11)
    assert not check.passed, check.message


def _one_step_kernel(lm, kernel_name, proposal_class=SuffixResampling, **extra):
    rule = SamplingRule(1 / ALPHA)
    proposal = proposal_class(lm, rule, resolve_cut_rule(kernel_name), N, block_start=BLOCK if kernel_name == "within-block" else 0, **extra)
    return MetropolisHastings(PowerTarget(ALPHA, N), proposal), rule


def _exact_start(lm, rule, law, chains, seed):
    draws = sample_exact(law, make_generator(seed), chains)
    prompts = TokenBatch.from_lists([[]] * chains)
    return SequenceBatch.from_sequences(lm, rule, prompts, draws, capacity=N)


@pytest.mark.parametrize("kernel_name", CUT_RULES)
def test_one_step_conservation_from_exact_draws(lm, kernel_name):
    """X ~ p^alpha on S_n, one MH step of any kernel (within-block included) keeps X ~ p^alpha."""
    law = power_law(lm, N, ALPHA)
    kernel, rule = _one_step_kernel(lm, kernel_name)
    start = _exact_start(lm, rule, law, chains_to_detect(law.probs()), seed=21)
    result = assert_conservation(kernel, start, lambda b: map(tuple, b.to_lists()), law.probs(), law.sequences, seed=22,
                                 false_failure_rate=FALSE_FAILURE_RATE, num_steps=2)
    assert result.acceptance_rate > 0.3, result.message
    assert result.min_detectable_tv <= TV_RESOLUTION, result.message


def test_conservation_catches_the_published_ratio(lm):
    law = power_law(lm, N, ALPHA)
    kernel, rule = _one_step_kernel(lm, "uniform", PublishedRatioSuffix, alpha=ALPHA)
    start = _exact_start(lm, rule, law, 20000, seed=21)
    with pytest.raises(AssertionError, match="conservation check FAILED"):
        assert_conservation(kernel, start, lambda b: map(tuple, b.to_lists()), law.probs(), law.sequences, seed=22,
                            false_failure_rate=FALSE_FAILURE_RATE, num_steps=2)


def test_max_swap_climbs_to_the_mode():
    """alpha = inf: accept iff log p increases; chains end at the most likely sequence of S_n."""
    lm = load_toy("tiny")
    law = power_law(lm, 5, 1.0)
    mode = law.sequences[int(law.probs().argmax())]
    config = PowerSamplerConfig(alpha=math.inf, block_size=5, max_new_tokens=5, mcmc_steps=60)
    from mcmc_llm.drivers.power import power_sample

    result = power_sample(lm, [[]], config, chains_per_prompt=500, seed=5)
    at_mode = sum(tuple(s) == mode for s in result.sequences()) / 500
    assert at_mode > 0.95, f"only {at_mode:.3f} of max-swap chains reached the mode {mode}"
    log_p = result.trace.samples["log_p"]
    assert (log_p[:, 1:] >= log_p[:, :-1] - 1e-12).all(), "max-swap must never decrease log p"
