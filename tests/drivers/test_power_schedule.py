"""Plumbing of the block-wise schedule: validation, accounting, determinism, batching."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mcmc_llm.lm.toy import load_toy
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"alpha must be a number > 0 or inf, got -2"):
        PowerSamplerConfig(alpha=-2.0)
    with pytest.raises(ValueError, match=r"block_size 300 is larger than max_new_tokens 256"):
        PowerSamplerConfig(block_size=300, max_new_tokens=256)
    with pytest.raises(ValueError, match=r"unknown cut rule .random.; allowed: uniform, within-block"):
        PowerSamplerConfig(cut_rule="random")
    with pytest.raises(ValueError, match=r"mcmc_steps must be a non-negative integer, got -1"):
        PowerSamplerConfig(mcmc_steps=-1)
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0"):
        PowerSamplerConfig(proposal_temperature=-0.5)
    with pytest.raises(ValueError, match=r"unknown ratio 'approx'"):
        PowerSamplerConfig(ratio="approx")
    with pytest.raises(ValueError, match=r"unknown batching 'async'; allowed: continuous, lockstep"):
        PowerSamplerConfig(batching="async")
    with pytest.raises(ValueError, match=r"chains_per_prompt must be a positive integer, got 0"):
        power_sample(load_toy("tiny"), [[]], PowerSamplerConfig(block_size=2, max_new_tokens=4), chains_per_prompt=0)


def test_stages_and_defaults_follow_the_paper():
    config = PowerSamplerConfig()
    assert (config.alpha, config.block_size, config.max_new_tokens, config.mcmc_steps) == (4.0, 192, 3072, 10)
    assert config.temperature == 0.25 and config.num_stages == 16 and config.stage_cap(15) == 3072
    uneven = PowerSamplerConfig(block_size=3, max_new_tokens=7)
    assert [uneven.stage_cap(k) for k in range(uneven.num_stages)] == [3, 6, 7]
    assert PowerSamplerConfig(alpha=math.inf).temperature == 0.25


BATCHINGS = pytest.mark.parametrize("batching", ["continuous", "lockstep"])


@BATCHINGS
def test_token_accounting_matches_the_backend_counter(batching):
    lm = load_toy("trigram")
    config = PowerSamplerConfig(alpha=2.0, block_size=3, max_new_tokens=9, mcmc_steps=4, cut_rule="uniform", batching=batching)
    result = power_sample(lm, [[], [1, 2]], config, chains_per_prompt=50, seed=3)
    stats = result.trace.stats
    per_chain = (stats["tokens_resampled"] + stats["extension_tokens"]).sum(axis=1)
    assert per_chain.sum() == result.compute["tokens_sampled"]
    assert result.trace.num_draws == config.num_stages * config.mcmc_steps
    assert set(np.unique(stats["stage"])) == {0, 1, 2}
    lengths = result.trace.samples["length"]
    assert lengths.max() <= 9 and (lengths[:, -1] == [len(s) for s in result.sequences()]).all()


@BATCHINGS
def test_same_seed_same_samples_and_prompts_are_batched_separately(batching):
    lm = load_toy("bigram")
    config = PowerSamplerConfig(alpha=3.0, block_size=2, max_new_tokens=6, mcmc_steps=3, batching=batching)
    first = power_sample(lm, [[1], [3, 4]], config, chains_per_prompt=20, seed=9)
    again = power_sample(lm, [[1], [3, 4]], config, chains_per_prompt=20, seed=9)
    other = power_sample(lm, [[1], [3, 4]], config, chains_per_prompt=20, seed=10)
    assert first.sequences() == again.sequences()
    assert first.sequences() != other.sequences()
    assert first.chain_trace(1).num_chains == 20
    assert np.array_equal(first.chain_trace(1).samples["log_p"], first.trace.samples["log_p"][20:40])


@BATCHINGS
def test_zero_mcmc_steps_is_plain_tempered_generation(batching):
    lm = load_toy("tiny")
    config = PowerSamplerConfig(alpha=2.0, block_size=2, max_new_tokens=6, mcmc_steps=0, batching=batching)
    result = power_sample(lm, [[]], config, chains_per_prompt=30, seed=1)
    assert result.trace is None
    assert result.compute["tokens_sampled"] == sum(len(s) for s in result.sequences())


def test_continuous_batching_records_the_lockstep_trace_layout():
    """Same names, shapes and dtypes; every chain's draws are its own steps in order (the trace's
    length functional follows the proposals each chain accepted)."""
    lm = load_toy("trigram")
    config = PowerSamplerConfig(alpha=2.0, block_size=3, max_new_tokens=9, mcmc_steps=3)
    runs = {b: power_sample(lm, [[], [1]], dataclasses.replace(config, batching=b), chains_per_prompt=40, seed=4)
            for b in ("continuous", "lockstep")}
    fast, slow = runs["continuous"].trace, runs["lockstep"].trace
    for group in ("samples", "stats"):
        mine, theirs = getattr(fast, group), getattr(slow, group)
        assert sorted(mine) == sorted(theirs)
        for name in mine:
            assert mine[name].shape == theirs[name].shape and mine[name].dtype == theirs[name].dtype, name
    accepted = fast.stats["accepted"]
    proposed, length = fast.stats["proposed_length"], fast.samples["length"]
    assert (length[accepted] == proposed[accepted]).all()
    before = length[:, :-1] + fast.stats["extension_tokens"][:, 1:]  # a stage's extension comes before its first step
    assert (length[:, 1:][~accepted[:, 1:]] == before[~accepted[:, 1:]]).all()
    assert (length[:, -1] == [len(s) for s in runs["continuous"].sequences()]).all()
    assert (fast.stats["stage"] == slow.stats["stage"]).all()


def test_the_power_module_re_exports_its_pieces():
    """`mcmc_llm.drivers.power` runs the sampler; its config, budget formula and result type live in
    their own modules and stay importable from it, as the same objects (pickles and user code name it)."""
    from mcmc_llm.drivers import power, power_budget, power_config, power_result

    moved = {
        power_config: ("BATCHING", "RATIOS", "PowerSamplerConfig", "Stage", "check_proposal_settings"),
        power_budget: ("power_token_budget",),
        power_result: ("PowerSampleResult", "token_log_probs"),
    }
    for module, names in moved.items():
        for name in names:
            assert getattr(power, name) is getattr(module, name), name
            assert name in power.__all__, name
    assert all(hasattr(power, name) for name in power.__all__)
