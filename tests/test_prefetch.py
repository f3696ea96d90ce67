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

from mcmc_llm.lm.exact import power_law
from mcmc_llm.core.random import Streams
from mcmc_llm.core.recorder import TraceRecorder
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.drivers import power as schedule
from mcmc_llm.drivers.asynchronous import AsynchronousChains
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.sequences import SequenceBatch
from tests.power_helpers import sampled_law_check

N, ALPHA, BLOCK = 4, 3.0, 2
ROWS_PER_CHAIN = 3


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


@pytest.mark.slow  # about 30 s each: three rows per chain
@pytest.mark.parametrize("kernel", ["uniform", "restart"])
def test_deep_prefetching_reaches_the_power_law(lm, monkeypatch, kernel):
    """Uniform cuts (acceptance pre-fetches wait for their context) and restarts (their context is
    the prompt, so they start at once)."""
    _with_rows(monkeypatch)
    check = sampled_law_check(lm, power_law(lm, N, ALPHA), _config(kernel=kernel), chains=6000, seed=21)
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
