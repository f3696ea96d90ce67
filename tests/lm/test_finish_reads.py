"""Finish reads every k steps (`ContinuousBatch(read_every=k)`, `lm.finish_read_interval`).

The host reads which rows are done only every k-th step; a row done in between is carried along
unrecorded.  The chains, continuations and token counters must be those of k = 1: checked for
k = 8 on toy and random-weight transformers models, for plain generation and for power sampling
(continuous batching with pre-fetching and early rejection, where rows stop on EOS, caps and stop
rules).  In generation only `forward_passes` (more steps) and `tokens_overrun` (pushes for done
rows) may differ; in power sampling with pre-fetching, the pre-fetched work that is discarded (and
what it encoded) also depends on when requests are reported.
"""

from __future__ import annotations

import pytest
import torch

from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.generation import ContinuousBatch, SamplingRule, sample_continuations
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.registry import load_model, random_model

SAME = ("tokens_sampled", "tokens_discarded", "tokens_rejected_early", "tokens_encoded", "attention_positions")


def language_model(spec: str, read_every: int):
    lm = random_model("llama-tiny", device="cpu", dtype="float64", seed=2) if spec == "random" else load_model(spec)
    lm.finish_read_interval = read_every
    return lm


@pytest.mark.parametrize("spec", ["toy:trigram", "random"])
def test_generation_is_the_same_with_reads_every_8_steps(spec):
    contexts = TokenBatch.from_lists([[1, 2, 3, 1], [3], [2, 1], [1]] if spec != "random" else [[5, 6, 7, 8], [3], [9, 10], [4]])
    caps = torch.tensor([30, 5, 40, 0])
    runs = {}
    for k in (1, 8):
        lm = language_model(spec, k)
        runs[k] = (sample_continuations(lm, contexts, caps, SamplingRule(0.7), torch.Generator().manual_seed(5)), lm.counter)
    (one, one_counter), (eight, eight_counter) = runs[1], runs[8]
    assert torch.equal(eight.tokens.ids, one.tokens.ids) and torch.equal(eight.tokens.lengths, one.tokens.lengths)
    assert torch.equal(eight.log_q, one.log_q) if spec != "random" else torch.allclose(eight.log_q, one.log_q, atol=1e-12)
    assert torch.equal(eight.ended, one.ended)
    assert {f: getattr(eight_counter, f) for f in SAME} == {f: getattr(one_counter, f) for f in SAME}
    assert one_counter.tokens_overrun == 0
    if spec == "random":  # the transformers backend records its pushes; rows done between reads overran
        assert eight_counter.tokens_overrun > 0


def test_a_row_done_between_reads_is_reported_at_the_read():
    lm = language_model("toy:trigram", 8)
    engine = ContinuousBatch(lm, SamplingRule(1.0), torch.Generator().manual_seed(0))
    engine.submit(["short"], TokenBatch.from_lists([[1]]), torch.tensor([2]))
    reported = [engine.step()[0] for _ in range(8)]
    assert reported[:7] == [[]] * 7 and reported[7] == ["short"]  # done after 2 draws, read at the 8th step
    assert not engine.busy


def test_read_every_must_be_positive():
    with pytest.raises(ValueError, match="read_every must be a positive number of steps, got 0"):
        ContinuousBatch(load_model("toy:trigram"), read_every=0)


@pytest.mark.parametrize("spec", ["toy:derail", "random"])
def test_power_chains_are_the_same_with_reads_every_8_steps(spec):
    config = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=12, mcmc_steps=3, batching="continuous")
    prompts = [[1], [2]] if spec != "random" else [[5, 6, 7], [8, 9]]
    runs = {k: power_sample(language_model(spec, k), prompts, config, chains_per_prompt=8, seed=3) for k in (1, 8)}
    one, eight = runs[1], runs[8]
    assert eight.final.tokens.tolist() == one.final.tokens.tolist()
    for name in ("accepted", "rejected_early", "tokens_resampled"):
        assert (eight.trace.stats[name] == one.trace.stats[name]).all()
    assert one.compute["tokens_rejected_early"] > 0  # stop rules fired, between reads too
    # the tokens of the chains' own proposals are the same; how much pre-fetched work is thrown away
    # (and so how much is encoded) depends on when finished requests are reported, as batch timing does
    used = ("tokens_sampled", "tokens_rejected_early")
    assert {f: eight.compute[f] for f in used} == {f: one.compute[f] for f in used}
