"""The static-shape decoding step (`mcmc_llm.lm.hf.decode_step`).

* Same chains: power sampling (continuous with pre-fetch, and lock-step) and generation with
  admissions give identical tokens and compute records with the static-shape step ("eager") and
  the variable-width step ("off"), on float64 random-weight models.
* Bucketing: the step runs on the bucket's row count; padding rows touch no live row.
* Arena reuse: consecutive batches reuse one arena (and its steps) and draw what fresh arenas draw.
* Compiled whole: `torch.compile(fullgraph=True)` (a graph break would raise) gives the eager
  step's chains (slow: compiling takes about a minute on a CPU).
"""

from __future__ import annotations

import pytest
import torch

from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.generation import ContinuousBatch, SamplingRule, sample_continuations
from mcmc_llm.lm.hf.decode_step import BUCKETS, bucket_rows, resolve_graph_mode
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.registry import load_model, random_model
from tests.lm.hf.test_backend import TOL64


def model(graphs: str, preset: str = "llama-tiny"):
    lm = random_model(preset, device="cpu", dtype="float64", seed=2)
    lm.engine = "static"
    lm.graphs = graphs
    return lm


def test_rows_round_up_to_a_bucket():
    assert [bucket_rows(n) for n in (1, 8, 9, 64, 65, 512, 513, 1100)] == [8, 8, 16, 64, 128, 512, 1024, 1536]
    assert all(bucket_rows(b) == b for b in BUCKETS)
    with pytest.raises(ValueError, match="at least one row, got 0"):
        bucket_rows(0)


def test_graph_modes_are_checked_and_auto_is_off_on_a_cpu():
    assert resolve_graph_mode("auto", torch.device("cpu")) == "off"
    assert resolve_graph_mode("auto", torch.device("cuda")) == "compiled"
    with pytest.raises(ValueError, match=r"graphs must be one of .*'eager'.*got 'fast'"):
        model("fast")
    with pytest.raises(ValueError, match="graphs='eager' applies to transformers models"):
        load_model("toy:trigram", graphs="eager")


@pytest.mark.parametrize("batching", ["continuous", "lockstep"])
@pytest.mark.parametrize("preset", ["llama-tiny", "qwen2-tiny"])
def test_power_chains_are_identical_with_the_static_shape_step(batching, preset):
    config = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=16, mcmc_steps=3, batching=batching)
    results = {}
    for graphs in ("off", "eager"):
        lm = model(graphs, preset)
        lm.register_prefix([5, 6, 7])
        results[graphs] = power_sample(lm, [[5, 6, 7], [8, 9]], config, chains_per_prompt=4, seed=3)
        assert lm.graphs == graphs
    off, static = results["off"], results["eager"]
    assert static.final.tokens.tolist() == off.final.tokens.tolist()
    assert torch.allclose(static.final.log_p, off.final.log_p, atol=TOL64, rtol=0)
    assert static.compute == off.compute


def admissions(lm) -> list[tuple[int, list[int]]]:
    """Requests submitted as others finish, so steps admit rows (some with several tokens to encode)."""
    engine = ContinuousBatch(lm, SamplingRule(0.7), torch.Generator().manual_seed(1))
    engine.submit([0, 1, 2], TokenBatch.from_lists([[5, 6, 7, 8], [3], [9, 10]]), torch.tensor([6, 3, 9]))
    done, next_key = [], 3
    while engine.busy:
        keys, finished = engine.step()
        for i, key in enumerate(keys):
            tokens = finished.tokens.ids[i, : finished.tokens.lengths[i]].tolist()
            done.append((key, tokens))
            if next_key < 12:
                engine.submit([next_key], TokenBatch.from_lists([[4, 5] + tokens[:2]]), torch.tensor([5]))
                next_key += 1
    return done


def test_admitted_rows_and_padding_rows_do_not_disturb_each_other():
    off, static = model("off"), model("eager")
    assert admissions(static) == admissions(off)
    assert static.counter == off.counter
    used = {key[-1] for key in static._static.steps._steps}
    assert used and used <= set(BUCKETS)


def test_generation_matches_and_consecutive_batches_reuse_one_arena():
    contexts = TokenBatch.from_lists([[5, 6, 7, 8], [3], [9, 10]])
    caps = torch.tensor([30, 5, 40])
    off, static = model("off"), model("eager")
    arenas = set()
    for seed in (5, 6):
        expected = sample_continuations(off, contexts, caps, SamplingRule(0.7), torch.Generator().manual_seed(seed))
        got = sample_continuations(static, contexts, caps, SamplingRule(0.7), torch.Generator().manual_seed(seed))
        arenas.add(id(static._static._last_arena))
        assert torch.equal(got.tokens.ids, expected.tokens.ids)
        assert torch.allclose(got.log_p, expected.log_p, atol=TOL64, rtol=0)
    assert len(arenas) == 1  # the second batch reused the first one's arena


@pytest.mark.slow
def test_the_step_compiles_whole_and_gives_the_eager_chains():
    """`fullgraph=True` raises on any graph break; the compiled step's arithmetic may be fused
    differently, so log p agrees to 1e-5 (float64) and the draws are identical.  Two batches of
    different buckets go through the one compiled function of the model."""
    batches = [(TokenBatch.from_lists([[5, 6, 7, 8], [3], [9, 10]]), torch.tensor([12, 5, 12])),
               (TokenBatch.from_lists([[5, 6, 7, 8], [3], [9, 10]] * 4), torch.tensor([6, 9, 4] * 4))]
    draws = {}
    for graphs in ("eager", "compiled"):
        lm = model(graphs)
        draws[graphs] = [sample_continuations(lm, contexts, caps, SamplingRule(0.7), torch.Generator().manual_seed(5))
                         for contexts, caps in batches]
        if graphs == "compiled":
            assert lm.finish_read_interval == 8  # compiled steps read finished rows every 8 steps
            assert {bucket for bucket, _ in lm._static.steps.capture_seconds} == {8, 16}  # both buckets compiled and timed
            assert all(step.compiled for step in lm._static.steps._steps.values())
    for compiled, eager in zip(draws["compiled"], draws["eager"]):
        assert torch.equal(compiled.tokens.ids, eager.tokens.ids)
        assert torch.allclose(compiled.log_p, eager.log_p, atol=1e-5, rtol=0)
