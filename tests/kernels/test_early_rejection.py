"""Exact early rejection (`mcmc_llm.kernels.suffix_mh`, `mcmc_llm.lm.early_stop`).

* The bound: for every proposal drawn to its end, the running bound after t tokens is at least the
  final log ratio, at every t, for the temperatures, truncations and cut rules where early rejection
  is on; at a temperature below 1/alpha the same bound fails (which is why it is off there).
* Same chains: with early rejection on and off, tokens, acceptances and log p are identical on toy
  LMs (lock-step, continuous at 1 and 3 rows per chain) and on a random-weight transformers model;
  only the compute counters differ, and every stopped proposal is a rejected step.
* Off where not exact: a temperature below 1/alpha or above 1, alpha < 1, max-swap, a proposal
  from another LM, priority and entropy cuts: no stop rule, no token rejected early.
* Companion: a wrong bound (the forward cut term left out of the offset) changes the chains.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mcmc_llm.core.random import Streams
from mcmc_llm.drivers import power as schedule
from mcmc_llm.drivers.asynchronous import AsynchronousChains
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.kernels.suffix_mh import SuffixMH
from mcmc_llm.lm.early_stop import EarlyStop
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.registry import random_model
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.lm.toy import NgramLM, load_toy
from mcmc_llm.proposals import suffix as suffix_module
from mcmc_llm.drivers.extension import extend
from mcmc_llm.proposals.suffix import SuffixResampling, draw_suffixes
from mcmc_llm.targets.sequence import PowerTarget

CAP = 10


def _state(lm, kernel, chains, seed):
    """Chains at the cap (or ended), extended from the empty prompt at temperature 1."""
    start = SequenceBatch.empty(TokenBatch.from_lists([[]] * chains, device=lm.device), CAP)
    position = extend(lm, SamplingRule(1.0), start, CAP, Streams.for_chains(seed, 0, torch.arange(chains)).split("extend"))
    return kernel.init(position)


def _running_bounds(kernel, state, source):
    """Every chain's bound after t = 1.. tokens of its full proposal (inf past its end or without a
    rule), and its final log ratio."""
    alpha = kernel.token_power
    request = kernel.plan(source, state)
    stop = request.stop
    log_u = torch.log(source.split("accept").uniform((len(state.log_target),)))
    continuation = draw_suffixes(state.position, request.plan, source.split("propose").split("tokens"))
    _, info = kernel.finish(source, state, request._replace(stop=None), continuation)
    offset = log_u - 1e-6 - stop.threshold
    steps = alpha * continuation.log_p - continuation.log_q
    drawn = continuation.tokens.lengths
    bounds = []
    for t in range(1, int(drawn.max()) + 1):
        bound = offset + stop.bound(steps[:, :t].sum(-1), torch.full_like(drawn, t))
        bounds.append(torch.where((t <= drawn) & torch.isfinite(stop.threshold), bound, torch.full_like(bound, math.inf)))
    return torch.stack(bounds, 1), info.log_accept_ratio


@pytest.mark.parametrize("temperature,top_k,cut", [
    (0.25, None, "uniform"), (0.5, None, "uniform"), (1.0, None, "uniform"), (0.25, 2, "uniform"),
    (0.25, None, "within-block"), (0.3, None, "restart"),
])
def test_the_running_bound_is_never_below_the_final_ratio(temperature, top_k, cut):
    """2,000 chains of a random trigram at the cap, alpha = 4: at every t the bound is >= the final
    log ratio (up to float64 rounding)."""
    lm = NgramLM.random(5, 3, seed=4, eos_logit=-1.5)
    proposal = SuffixResampling(lm, SamplingRule(temperature, top_k), cut, CAP, block_start=4 if cut == "within-block" else 0)
    kernel = SuffixMH(PowerTarget(4.0, CAP), proposal)
    state = _state(lm, kernel, 2000, seed=1)
    bounds, final = _running_bounds(kernel, state, Streams.for_chains(9, 0, torch.arange(2000)))
    finite = torch.isfinite(bounds)
    assert finite.any()
    assert bool((bounds[finite] >= (final[:, None].expand_as(bounds)[finite] - 1e-9)).all())


def test_below_one_over_alpha_the_bound_fails_and_early_rejection_is_off():
    """At temperature 0.1 < 1/alpha a token can raise the ratio (alpha log p - log q > 0), so a bound
    taken early would be wrong: the proposal gives no stop rule."""
    lm = NgramLM.random(5, 3, seed=4, eos_logit=-1.5)
    hot = SuffixResampling(lm, SamplingRule(0.1), "uniform", CAP)
    kernel = SuffixMH(PowerTarget(4.0, CAP), hot)
    state = _state(lm, kernel, 500, seed=1)
    source = Streams.for_chains(9, 0, torch.arange(500))
    request = kernel.plan(source, state)
    assert request.stop is None
    continuation = draw_suffixes(state.position, request.plan, source.split("propose").split("tokens"))
    increments = 4.0 * continuation.log_p - continuation.log_q
    inside = torch.arange(increments.shape[1])[None] < continuation.tokens.lengths[:, None]
    assert bool((increments[inside] > 1e-6).any()), "some token raises the ratio: the running sum is not a bound"


def _not_exact_kernels(lm):
    second = NgramLM.random(4, 3, seed=7, eos_logit=-1.0)
    rule = SamplingRule(0.25)
    return {
        "temperature below 1/alpha": SuffixMH(PowerTarget(4.0, CAP), SuffixResampling(lm, SamplingRule(0.1), "uniform", CAP)),
        "temperature above 1": SuffixMH(PowerTarget(1.0, CAP), SuffixResampling(lm, SamplingRule(1.5), "uniform", CAP)),
        "alpha below 1": SuffixMH(PowerTarget(0.5, CAP), SuffixResampling(lm, SamplingRule(1.0), "uniform", CAP)),
        "max-swap": SuffixMH(PowerTarget(math.inf, CAP), SuffixResampling(lm, rule, "uniform", CAP), rule="max_swap"),
        "another proposal LM": SuffixMH(PowerTarget(4.0, CAP), SuffixResampling(second, rule, "uniform", CAP, reference_lm=lm)),
        "priority cuts": SuffixMH(PowerTarget(4.0, CAP), SuffixResampling(lm, rule, "priority", CAP)),
        "entropy cuts": SuffixMH(PowerTarget(4.0, CAP), SuffixResampling(lm, rule, "entropy", CAP)),
        "switched off": SuffixMH(PowerTarget(4.0, CAP), SuffixResampling(lm, rule, "uniform", CAP), early_reject=False),
    }


def test_early_rejection_is_off_where_the_bound_does_not_hold():
    lm = load_toy("trigram")
    for why, kernel in _not_exact_kernels(lm).items():
        state = _state(lm, kernel, 50, seed=2)
        request = kernel.plan(Streams.for_chains(3, 0, torch.arange(50)), state)
        assert request.stop is None, why
    config = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=CAP, mcmc_steps=3, proposal_temperature=0.1)
    result = power_sample(lm, [[]], config, chains_per_prompt=200, seed=1)
    assert result.compute["tokens_rejected_early"] == 0 and not result.trace.stats["rejected_early"].any()


def _rows(monkeypatch, rows_per_chain):
    def run(proposer, rule, start, *args, **options):
        return AsynchronousChains(proposer, rule, start, *args, rows=rows_per_chain * start.num_chains, **options).run()

    monkeypatch.setattr(schedule, "run_asynchronous_chains", run)


def _on_and_off(lm, config, prompts, chains, seed=5):
    return {flag: power_sample(lm, prompts, dataclasses.replace(config, early_reject=flag), chains_per_prompt=chains, seed=seed)
            for flag in (True, False)}


def _assert_same_chains(runs, tol=0.0):
    on, off = runs[True], runs[False]
    assert on.final.tokens.tolist() == off.final.tokens.tolist()
    assert on.final.lengths.tolist() == off.final.lengths.tolist()
    assert np.array_equal(on.trace.stats["accepted"], off.trace.stats["accepted"])
    assert torch.allclose(on.final.total_log_p(), off.final.total_log_p(), atol=tol, rtol=0)
    stopped = on.trace.stats["rejected_early"]
    assert not (stopped & on.trace.stats["accepted"]).any()  # a stopped proposal is always a rejected step
    assert not off.trace.stats["rejected_early"].any() and off.compute["tokens_rejected_early"] == 0


@pytest.mark.parametrize("driver", [("lockstep", 1), ("continuous", 1), ("continuous", 3)])
@pytest.mark.parametrize("toy,cut", [("trigram", "uniform"), ("derail", "uniform"), ("trigram", "within-block"),
                                     ("derail", "restart")])
def test_chains_are_identical_with_and_without_early_rejection(monkeypatch, driver, toy, cut):
    batching, rows = driver
    _rows(monkeypatch, rows)
    config = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=12, mcmc_steps=4, batching=batching, cut_rule=cut)
    runs = _on_and_off(load_toy(toy), config, [[], [1]], chains=300)
    _assert_same_chains(runs)
    on, off = runs[True].compute, runs[False].compute
    assert on["tokens_rejected_early"] > 0
    assert on["tokens_sampled"] + on["tokens_discarded"] < off["tokens_sampled"] + off["tokens_discarded"]
    stats = runs[True].trace.stats
    assert (stats["tokens_resampled"] + stats["extension_tokens"]).sum() == on["tokens_sampled"]
    assert (stats["tokens_resampled"] * stats["rejected_early"]).sum() == on["tokens_rejected_early"]  # withdrawn ones leave the count
    assert (stats["tokens_resampled"] <= stats["proposal_budget"]).all()


@pytest.mark.parametrize("batching,rows", [("continuous", 1), ("continuous", 3), ("lockstep", 1)])
def test_chains_are_identical_on_a_random_weight_transformers_model(monkeypatch, batching, rows):
    _rows(monkeypatch, rows)
    lm = random_model("llama-tiny", device="cpu", dtype="float64", seed=2)
    config = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=16, mcmc_steps=3, batching=batching)
    runs = _on_and_off(lm, config, [[5, 6, 7], [8, 9]], chains=4, seed=3)
    _assert_same_chains(runs, tol=1e-9)
    assert runs[True].compute["tokens_rejected_early"] > 0


class _WrongBound(SuffixResampling):
    """Deliberately wrong: the offset leaves out the forward cut term -log P(m | x) (>= 0), so the
    bound is too low by log L and proposals that could still be accepted are stopped."""

    def early_rejection(self, position, plan, alpha, log_u):
        stop = super().early_rejection(position, plan, alpha, log_u)
        if stop is None:
            return None
        log_cut = plan.log_cut.gather(1, plan.cut_index.clamp(max=position.capacity - 1)[:, None]).squeeze(1)
        return stop._replace(threshold=stop.threshold - log_cut.to(stop.threshold))  # raised by -log P(m | x) = log L


def test_a_wrong_bound_changes_the_chains(monkeypatch):
    """Companion: the identity check above catches a bound that is too low."""
    lm = load_toy("trigram")
    config = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=12, mcmc_steps=4)

    def wrong(stage):
        return _WrongBound(lm, config.sampling_rule(), "uniform", stage.cap, block_start=stage.block_start)

    runs = {flag: power_sample(lm, [[]], dataclasses.replace(config, early_reject=flag), chains_per_prompt=300, seed=5, proposal=wrong)
            for flag in (True, False)}
    with pytest.raises(AssertionError):
        _assert_same_chains(runs)
    assert not np.array_equal(runs[True].trace.stats["accepted"], runs[False].trace.stats["accepted"])


def test_the_engine_stops_rows_by_their_rule_and_counts_their_tokens():
    """A row whose threshold is +inf-like stops after its first token; a row with -inf never stops."""
    lm = load_toy("trigram")
    from mcmc_llm.lm.generation import sample_continuations

    contexts = TokenBatch.from_lists([[1], [1]], device=lm.device)
    stop = EarlyStop(torch.tensor([1e9, -math.inf], dtype=torch.float64), torch.full((2,), 4.0, dtype=torch.float64),
                     torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    before = lm.counter.tokens_rejected_early
    out = sample_continuations(lm, contexts, 6, SamplingRule(0.25), Streams.for_chains(0, 0, torch.arange(2)), stop)
    assert out.stopped().tolist() == [True, False] and int(out.tokens.lengths[0]) == 1
    assert lm.counter.tokens_rejected_early - before == 1
    with pytest.raises(ValueError, match="got 1 stop rules for 2 contexts"):
        sample_continuations(lm, contexts, 6, SamplingRule(0.25), Streams.for_chains(0, 0, torch.arange(2)),
                             EarlyStop(*(v[:1] for v in stop)))


def test_the_cli_and_configs_take_the_switch(tmp_path):
    from mcmc_llm.cli import main

    assert PowerSamplerConfig().early_reject is True
    with pytest.raises(ValueError, match="early_reject must be true or false, got 'no'"):
        PowerSamplerConfig(early_reject="no")
    outputs = {}
    for flags in ((), ("--no-early-reject",)):
        out = tmp_path / f"run{len(flags)}.jsonl"
        assert main(["sample", "--model", "toy:derail", "--max-new-tokens", "8", "--block-size", "4", "--mcmc-steps", "4",
                     "--chains", "20", "--out", str(out), *flags]) in (0, None)
        outputs[flags] = [json.loads(line)["tokens"] for line in out.read_text().splitlines()]
    assert outputs[()] == outputs[("--no-early-reject",)] and len(outputs[()]) == 20
