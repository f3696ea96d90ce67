"""Pre-fetching by asynchronous chains (`mcmc_llm.drivers.asynchronous`): the all-reject path and the
next step of an acceptance.

With 3 rows per chain every chain pre-fetches deeply from its first MH step on, not only in the
tail of a run.  The chains must still reach p^alpha (chi-square over the whole support, false-
failure rate 1e-4, seeded); the companion check shows the same test rejecting chains that keep
requests pre-fetched from a state they have just left.  Every drawn token is either sampled (used)
or discarded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import torch

from mcmc_llm.diagnostics.chain_law import chain_law
from mcmc_llm.lm.exact import power_law
from mcmc_llm.core.random import Streams
from mcmc_llm.core.recorder import TraceRecorder
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.toy import NgramLM, load_toy
from mcmc_llm.drivers import power as schedule
from mcmc_llm.drivers.asynchronous import AsynchronousChains
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.testing import chi_square_check, counts_from_samples
from tests.power_helpers import FALSE_FAILURE_RATE, TV_RESOLUTION, chains_to_detect, sampled_law_check

N, ALPHA, BLOCK = 4, 3.0, 2
ROWS_PER_CHAIN = 3


class _KeepsShortAcceptancePrefetches(AsynchronousChains):
    """Deliberately wrong: keeps an acceptance pre-fetch even when the accepted proposal ended (EOS)
    before the stage cap, so the pre-fetched cut was drawn for a length the state does not have."""

    def _keeps_acceptance_prefetch(self, chain, key, accepted, stage):
        return accepted


class _KeepsStalePrefetches(AsynchronousChains):
    """Deliberately wrong: after an acceptance it still promotes the request pre-fetched on the
    all-reject path, from the state the chain has just left (as if the step had been rejected)."""

    def _branch(self, chain, accepted):
        return super()._branch(chain, False)


def _with_rows(monkeypatch, chains_class=AsynchronousChains):
    """Route `power_sample` through `chains_class` with `ROWS_PER_CHAIN` rows per chain."""

    def run(proposer, rule, start, *args, **options):
        rows = ROWS_PER_CHAIN * start.num_chains
        return chains_class(proposer, rule, start, *args, rows=rows, **options).run()

    monkeypatch.setattr(schedule, "run_asynchronous_chains", run)


@pytest.fixture(scope="module")
def lm():
    return load_toy("trigram")


def _config(**changes):
    return PowerSamplerConfig(alpha=ALPHA, block_size=BLOCK, max_new_tokens=N, mcmc_steps=40, **changes)


def _finite_n_check(lm, steps: int, chains: int | None = None, seed: int = 21, alpha: float = ALPHA, block: int = BLOCK):
    """Chi-square of the final states of deep-pre-fetching chains after `steps` MH steps per stage
    against the exact finite-N law (`mcmc_llm.diagnostics.chain_law`): far from stationarity, so the
    check sees what the pre-fetches did to every step's transition, not only the fixed point.  By
    default as many chains as detect TV 0.02 (`chains_to_detect`)."""
    law = chain_law(lm, alpha=alpha, block_size=block, max_new_tokens=N, mcmc_steps=steps, chain="exact")
    chains = chains if chains is not None else chains_to_detect([law[s] for s in sorted(law)])
    config = PowerSamplerConfig(alpha=alpha, block_size=block, max_new_tokens=N, mcmc_steps=steps)
    draws = [tuple(s) for s in power_sample(lm, [[]], config, chains_per_prompt=chains, seed=seed).sequences()]
    support = sorted(law)
    return chi_square_check(counts_from_samples(draws, support), [law[s] for s in support], FALSE_FAILURE_RATE)


def test_deep_prefetching_keeps_the_exact_finite_n_law(lm, monkeypatch):
    """Three rows per chain, N = 2: both pre-fetch branches are taken and the law after two steps per
    stage is exactly Algorithm 1's (about 5 s)."""
    _with_rows(monkeypatch)
    check = _finite_n_check(lm, steps=2)
    assert check.passed and check.min_detectable_tv <= TV_RESOLUTION, check.message


def test_acceptance_prefetch_without_its_length_check_is_rejected(lm, monkeypatch):
    """Companion: keeping an acceptance pre-fetch whose state ended before the stage cap (its cut was
    drawn for the cap's length) is caught by the same fast check."""
    _with_rows(monkeypatch, _KeepsShortAcceptancePrefetches)
    check = _finite_n_check(lm, steps=2, chains=5000)  # it puts mass outside S_n: few chains show it
    assert not check.passed, "a pre-fetch kept for the wrong length should bias the law: " + check.message


@pytest.mark.slow  # about 25 s
def test_acceptance_prefetch_cut_is_drawn_for_the_cap_length(monkeypatch):
    """An acceptance pre-fetch's cut must be drawn for the stage cap's length, not the current
    state's.  The two differ only when the current state ended early (EOS) and the move it
    pre-fetches for is accepted at full length, so the setting makes that common: a random bigram
    whose EOS is likely, alpha = 1 (such moves are accepted often), one stage (B = T = 4), N = 2,
    and 200,000 chains (the check detects TV >= 0.01 over its bins; drawing the cut for the current
    length moves the law by about 0.013)."""
    _with_rows(monkeypatch)
    check = _finite_n_check(NgramLM.random(4, 2, seed=1, eos_logit=1.0), steps=2, chains=200_000, alpha=1.0, block=N)
    assert check.passed, check.message


@pytest.mark.slow  # about 30 s each: three rows per chain
@pytest.mark.parametrize("kernel", ["uniform", "restart"])
def test_deep_prefetching_reaches_the_power_law(lm, monkeypatch, kernel):
    """Uniform cuts (acceptance pre-fetches wait for their context) and restarts (their context is
    the prompt, so they start at once)."""
    _with_rows(monkeypatch)
    check = sampled_law_check(lm, power_law(lm, N, ALPHA), _config(cut_rule=kernel), chains=6000, seed=21)
    assert check.passed, check.message


@pytest.mark.slow
def test_keeping_stale_prefetches_is_rejected(lm, monkeypatch):
    _with_rows(monkeypatch, _KeepsStalePrefetches)
    check = sampled_law_check(lm, power_law(lm, N, ALPHA), _config(), chains=6000, seed=21)
    assert not check.passed, "proposals pre-fetched from a state the chain left should bias the law: " + check.message


def test_prefetched_proposals_are_used_and_every_token_is_accounted_for(lm, monkeypatch):
    _with_rows(monkeypatch)
    config = PowerSamplerConfig(alpha=2.0, block_size=3, max_new_tokens=9, mcmc_steps=4)
    result = power_sample(lm, [[], [1, 2]], config, chains_per_prompt=50, seed=3)
    stats = result.trace.stats
    used = (stats["tokens_resampled"] + stats["extension_tokens"]).sum()
    assert used == result.compute["tokens_sampled"]
    assert result.compute["tokens_discarded"] > 0  # pre-fetches of accepted steps were thrown away
    prefetched, accepted = stats["prefetched"], stats["accepted"]
    # Both branches are pre-fetched and used: steps after a rejection (all-reject path) and after an
    # acceptance (the next MH step of the same stage, pre-fetched for an acceptance).
    within_stage = (np.arange(prefetched.shape[1]) % config.mcmc_steps > 0)[None]
    assert (prefetched[:, 1:] & ~accepted[:, :-1] & within_stage[:, 1:]).any()
    assert (prefetched[:, 1:] & accepted[:, :-1] & within_stage[:, 1:]).any()


def test_accounting_holds_with_and_without_prefetch(lm):
    config = PowerSamplerConfig(alpha=2.0, block_size=3, max_new_tokens=9, mcmc_steps=4)
    runs = {flag: power_sample(lm, [[]], dataclasses.replace(config, prefetch=flag), chains_per_prompt=30, seed=5)
            for flag in (True, False)}
    assert runs[False].compute["tokens_discarded"] == 0 and not runs[False].trace.stats["prefetched"].any()
    for run in runs.values():
        stats = run.trace.stats
        assert (stats["tokens_resampled"] + stats["extension_tokens"]).sum() == run.compute["tokens_sampled"]


def test_rows_below_the_number_of_chains_is_an_error(lm):
    start = SequenceBatch.empty(TokenBatch.from_lists([[]] * 5, device=lm.device), 4)
    with pytest.raises(ValueError, match=r"rows must be at least the number of chains \(5\), got 4"):
        AsynchronousChains(lm, SamplingRule(), start, [], [2, 4], 1, Streams.for_chains(0, 0, torch.arange(5)), TraceRecorder(5, 2), rows=4)
