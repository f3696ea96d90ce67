"""Product and reward-tilted targets: the same MH machinery reaches their exact laws.

Power (chi-square at false-failure rate 1e-4; TV over the pooled bins detected with probability >= 0.9,
asserted): the conservation checks from exact draws (two MH steps, cheap) are sized by `chains_to_detect`
to detect TV 0.02; the end-to-end run of the reward-tilted target (two stages of 40 MH steps) uses 6000
chains and detects TV 0.050, and the product target's (150 steps, `-m slow`) detects TV 0.051.
"""

from __future__ import annotations

import numpy as np
import pytest

from mcmc_llm.kernels.mh import MetropolisHastings
from mcmc_llm.lm.exact import base_law
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.proposals.cut_rules import resolve_cut_rule
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.suffix import SuffixResampling
from mcmc_llm.lm.toy import NgramLM, load_toy
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.targets.sequence import PowerTarget, ProductTarget, RewardTiltedTarget
from mcmc_llm.testing import assert_conservation, chi_square_check, counts_from_samples
from tests.power_helpers import FALSE_FAILURE_RATE, TV_RESOLUTION, chains_to_detect

N, BLOCK = 4, 2


def _check(lm, target, exact_log_weights, law, config, seed):
    result = power_sample(lm, [[]], config, chains_per_prompt=6000, seed=seed, target=target)
    probs = np.exp(exact_log_weights - exact_log_weights.max())
    probs /= probs.sum()
    counts = counts_from_samples([tuple(s) for s in result.sequences()], law.sequences)
    return chi_square_check(counts, probs, FALSE_FAILURE_RATE)


def _exact_start(lm, sequences, probs, rule, seed):
    """`chains_to_detect(probs)` exact draws of `probs` over `sequences`, as a SequenceBatch under `rule`."""
    chains = chains_to_detect(probs)
    picks = np.searchsorted(np.cumsum(probs), np.random.default_rng(seed).random(chains) * probs.sum(), side="right")
    draws = [sequences[i] for i in picks]
    return SequenceBatch.from_sequences(lm, rule, TokenBatch.from_lists([[]] * chains), draws, capacity=N)


def _reward_setting():
    lm = load_toy("trigram")
    law = base_law(lm, N)
    reward = lambda sequences: [float(sum(token == 2 for token in s)) for s in sequences]  # noqa: E731
    alpha, weight = 2.0, 0.7
    exact = alpha * np.log(law.probs()) + weight * np.asarray(reward(law.sequences))
    return lm, law, RewardTiltedTarget(alpha, reward, weight, N), alpha, exact


def _product_setting():
    p, q = load_toy("trigram"), NgramLM.random(4, 2, seed=7, eos_logit=0.0, scale=0.6)
    law_p, law_q = base_law(p, N), base_law(q, N)
    assert law_p.sequences == law_q.sequences
    return p, q, law_p, np.log(law_p.probs()) + np.log(law_q.probs())


def test_product_target_is_conserved_by_one_mh_step():
    p, q, law_p, exact = _product_setting()
    probs = np.exp(exact - exact.max())
    probs /= probs.sum()
    rule = SamplingRule(1.0)
    start = _exact_start(p, law_p.sequences, probs, rule, seed=3)
    kernel = MetropolisHastings(ProductTarget(q, N), SuffixResampling(p, rule, resolve_cut_rule("uniform"), N))
    result = assert_conservation(kernel, start, lambda b: map(tuple, b.to_lists()), probs, law_p.sequences, seed=4,
                                 false_failure_rate=FALSE_FAILURE_RATE, num_steps=2)
    assert result.acceptance_rate > 0.2, result.message
    assert result.min_detectable_tv <= TV_RESOLUTION, result.message


@pytest.mark.slow
def test_product_of_two_lms_reaches_p_times_q():
    p, q, law_p, exact = _product_setting()
    config = PowerSamplerConfig(alpha=1.0, proposal_temperature=1.0, block_size=BLOCK, max_new_tokens=N, mcmc_steps=150)
    check = _check(p, ProductTarget(q, N), exact, law_p, config, seed=31)
    assert check.passed, check.message
    assert check.min_detectable_tv <= 0.052, check.message  # 6000 chains, 38 pooled bins (150 MH steps a stage)
    # The same samples are not p alone: the check has power to tell the two apart.
    wrong = _check(p, ProductTarget(q, N), np.log(law_p.probs()), law_p, config, seed=31)
    assert not wrong.passed, wrong.message


def test_reward_tilted_target_reaches_p_alpha_exp_lambda_r():
    lm, law, target, alpha, exact = _reward_setting()
    config = PowerSamplerConfig(alpha=alpha, block_size=BLOCK, max_new_tokens=N, mcmc_steps=40)
    check = _check(lm, target, exact, law, config, seed=32)
    assert check.passed, check.message
    assert check.min_detectable_tv <= 0.051, check.message  # 6000 chains, 33 bins; TV 0.02 in the conservation test


def test_reward_tilted_target_is_conserved_by_two_mh_steps():
    lm, law, target, alpha, exact = _reward_setting()
    probs = np.exp(exact - exact.max())
    probs /= probs.sum()
    rule = SamplingRule(1 / alpha)
    start = _exact_start(lm, law.sequences, probs, rule, seed=5)
    kernel = MetropolisHastings(target, SuffixResampling(lm, rule, resolve_cut_rule("uniform"), N))
    result = assert_conservation(kernel, start, lambda b: map(tuple, b.to_lists()), probs, law.sequences, seed=6,
                                 false_failure_rate=FALSE_FAILURE_RATE, num_steps=2)
    assert result.acceptance_rate > 0.2 and result.min_detectable_tv <= TV_RESOLUTION, result.message


def test_targets_reject_bad_arguments():
    with pytest.raises(ValueError, match="alpha must be a number > 0 or inf, got -1"):
        PowerTarget(-1.0, 4)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer.*0"):
        PowerTarget(2.0, 0)
    with pytest.raises(TypeError, match="reward must be callable"):
        RewardTiltedTarget(1.0, "not a function", 1.0, 4)
