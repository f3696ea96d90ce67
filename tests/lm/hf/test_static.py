"""The static-slot engine of the transformers backend (`mcmc_llm.lm.hf.static`, `hf.slots`).

* Same law: seeded power sampling (continuous batching with pre-fetch, and lock-step), Power-SMC
  with resampling and plain generation give identical chains and compute records on the static
  and the dynamic engine (float64 random-weight models, as the backend tests).
* In place: a decoding step copies no key/value position; dropping a row copies at most the one
  row moved into its place; admitting copies only the reused prefixes; retiring copies only the
  retired row; repeated rows (resampling) are copied once each.
* Capacity grows when needed without changing a log-prob; a consumed state is refused.
(`tests/lm/hf/test_backend.py` runs its full-forward checks and fuzzers on both engines.)
"""

from __future__ import annotations

import pytest
import torch

from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.generation import SamplingRule, sample_continuations
from mcmc_llm.lm.hf.slots import SLOT_ROUNDING, SlotState
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.registry import random_model
from mcmc_llm.smc.power_smc import SMCConfig, power_smc
from tests.lm.hf.test_backend import EAGER_TOL, TOL64, max_error


def model(engine: str, preset: str = "llama-tiny", seed: int = 2, **overrides):
    lm = random_model(preset, device="cpu", dtype="float64", seed=seed, **overrides)
    lm.engine = engine
    return lm


@pytest.mark.parametrize("batching", ["continuous", "lockstep"])
@pytest.mark.parametrize("preset", ["llama-tiny", "qwen2-tiny"])
def test_power_chains_are_identical_on_both_engines(batching, preset):
    config = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=16, mcmc_steps=3, batching=batching)
    prompts = [[5, 6, 7], [8, 9]]
    results = {}
    for engine in ("static", "dynamic"):
        lm = model(engine, preset)
        lm.register_prefix([5, 6, 7])
        results[engine] = power_sample(lm, prompts, config, chains_per_prompt=4, seed=3)
        assert lm._uses_static_slots() == (engine == "static")
    static, dynamic = results["static"], results["dynamic"]
    assert static.final.tokens.tolist() == dynamic.final.tokens.tolist()
    assert torch.allclose(static.final.log_p, dynamic.final.log_p, atol=TOL64, rtol=0)
    assert static.compute == dynamic.compute  # same forward passes, tokens encoded, discarded pre-fetches


def test_power_smc_with_resampling_is_identical_on_both_engines():
    config = SMCConfig(alpha=4.0, max_new_tokens=8, num_particles=8, ess_threshold=0.9, resampling="residual")
    runs = {engine: power_smc(model(engine, vocab_size=7), [[1, 2], [3]] * 3, config, seed=4) for engine in ("static", "dynamic")}
    assert int(runs["static"].diagnostics["resampled"].sum()) > 0  # rows were repeated
    assert torch.equal(runs["static"].particles.tokens, runs["dynamic"].particles.tokens)
    assert torch.allclose(runs["static"].log_normalizer, runs["dynamic"].log_normalizer, atol=1e-9, rtol=0)


def test_generation_is_identical_and_within_float64_of_the_full_forward():
    contexts = TokenBatch.from_lists([[5, 6, 7, 8], [3], [9, 10]])
    caps = torch.tensor([30, 5, 40])
    draws = {}
    for engine in ("static", "dynamic"):
        lm = model(engine)
        draws[engine] = sample_continuations(lm, contexts, caps, SamplingRule(0.7), torch.Generator().manual_seed(5))
    assert torch.equal(draws["static"].tokens.ids, draws["dynamic"].tokens.ids)
    assert torch.allclose(draws["static"].log_p, draws["dynamic"].log_p, atol=TOL64, rtol=0)


def test_a_decoding_step_copies_nothing_and_a_dropped_row_moves_at_most_one_row():
    lm = model("static")
    rows = [[5, 6, 7, 8, 9], [3], [12, 13, 14], [20, 21], [4, 4, 4, 4, 4, 4]]
    state = lm.start(TokenBatch.from_lists(rows))
    arena = state.arena
    for step in range(3):
        tokens = torch.tensor([1, 2, 3, 4, 5]) + step
        state = lm.advance(state, tokens)
        rows = [row + [int(t)] for row, t in zip(rows, tokens)]
    assert arena.copied_positions == 0
    # drop row 1: the last live row (length 9) moves into its physical row, nothing else moves
    state = lm.select_rows(state, torch.tensor([0, 2, 3, 4]))
    rows = [rows[k] for k in (0, 2, 3, 4)]
    assert arena.copied_positions == len(rows[-1]) and state.rows == (0, 2, 3, 1)
    # drop row 2, which lives in the last physical row: nothing moves
    state = lm.select_rows(state, torch.tensor([0, 1, 3]))
    rows = [rows[k] for k in (0, 1, 3)]
    assert arena.copied_positions == 9 and arena.live == 3 and state.rows == (0, 2, 1)
    tokens = torch.tensor([7, 8, 9])
    state = lm.advance(state, tokens)
    rows = [row + [int(t)] for row, t in zip(rows, tokens)]
    assert max_error(lm, state.logprobs, rows) < TOL64
    assert arena.copied_positions == 9


def test_admitting_copies_only_reused_prefixes_and_retiring_only_the_retired_row():
    lm = model("static")
    prompt = [5, 6, 7, 8]
    lm.register_prefix(prompt)
    rows = [prompt + [1, 2], prompt + [3]]
    state = lm.start(TokenBatch.from_lists(rows))
    arena = state.arena
    assert arena.copied_positions == 2 * len(prompt)  # each row's prompt, from the prefix cache
    lm.retire(state, torch.tensor([0]))
    assert arena.copied_positions == 8  # retiring copies out of the arena, not between its rows
    before = arena.copied_positions
    new_rows = [rows[0][:5], prompt + [9]]  # one token to encode each: x_<m of the retired row, the prompt
    tokens = torch.tensor([4, 4])
    state = lm.admit(state, tokens, TokenBatch.from_lists(new_rows))
    assert arena.copied_positions - before == 4 + 4
    assert lm.counter.forward_passes == 3  # the prompt, the start, and one pass for the admission
    rows = [row + [4] for row in rows] + new_rows
    assert max_error(lm, state.logprobs, rows) < TOL64


def test_repeated_rows_are_copied_once_each():
    lm = model("static")
    rows = [[5, 6, 7], [8, 9], [10]]
    state = lm.start(TokenBatch.from_lists(rows))
    arena = state.arena
    state = lm.select_rows(state, torch.tensor([2, 0, 0, 2, 1]))
    rows = [rows[k] for k in (2, 0, 0, 2, 1)]
    # sources 0, 1 and 2 stay in place; the repeats of 0 and 2 go to rows 3 and 4 (width 3 each)
    assert arena.copied_positions == 2 * 3 and arena.live == 5
    tokens = torch.tensor([1, 2, 3, 4, 5])
    state = lm.advance(state, tokens)
    assert max_error(lm, state.logprobs, [row + [int(t)] for row, t in zip(rows, tokens)]) < TOL64


def test_capacity_grows_past_the_first_allocation_without_changing_results():
    lm = model("static")
    rows = [[5, 6], [7]]
    state = lm.start(TokenBatch.from_lists(rows))
    assert state.arena.capacity_slots == SLOT_ROUNDING
    generator = torch.Generator().manual_seed(3)
    for _ in range(2 * SLOT_ROUNDING + 3):
        tokens = torch.randint(1, lm.vocab_size, (len(rows),), generator=generator)
        state = lm.advance(state, tokens)
        rows = [row + [int(t)] for row, t in zip(rows, tokens)]
    assert state.arena.capacity_slots >= 2 * SLOT_ROUNDING + 5
    assert max_error(lm, state.logprobs, rows) < TOL64
    # more rows than the arena holds: admission grows it
    extra = [[3, 4, 5]] * 5
    state = lm.admit(state, torch.tensor([1, 1]), TokenBatch.from_lists(extra))
    assert state.arena.capacity_rows >= 7
    assert max_error(lm, state.logprobs, [row + [1] for row in rows] + extra) < TOL64


def test_reserve_sizes_the_arena_from_the_generation_caps():
    lm = model("static")
    engine_rows = []
    original = lm._static.start

    def recording_start(contexts):
        state = original(contexts)
        engine_rows.append((state.arena.capacity_rows, state.arena.capacity_slots))
        return state

    lm._static.start = recording_start
    sample_continuations(lm, TokenBatch.from_lists([[5, 6, 7]] * 3), 100, SamplingRule(), torch.Generator().manual_seed(0))
    assert engine_rows == [(3, SLOT_ROUNDING * 4)]  # 103 tokens, rounded up: never grown on the way
    lm.start(TokenBatch.from_lists([[5, 6]]))  # a later, unrelated batch: not sized by the old announcement
    assert engine_rows[-1] == (1, SLOT_ROUNDING)


def test_concat_rows_joins_two_batches_and_consumes_both():
    lm = model("static")
    first, second = lm.start(TokenBatch.from_lists([[5, 6, 7]])), lm.start(TokenBatch.from_lists([[8], [9, 10]]))
    joined = lm.concat_rows(first, second)
    assert isinstance(joined, SlotState) and joined.arena is first.arena
    tokens = torch.tensor([1, 2, 3])
    state = lm.advance(joined, tokens)
    assert max_error(lm, state.logprobs, [[5, 6, 7, 1], [8, 2], [9, 10, 3]]) < TOL64
    with pytest.raises(RuntimeError, match="newest state"):
        lm.advance(second, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="share one arena"):
        lm.concat_rows(state, state)


def test_engine_choice_is_validated_and_unsupported_attention_falls_back(monkeypatch):
    lm = model("auto")
    with pytest.raises(ValueError, match="unknown engine 'fast'; choose one of auto, static, dynamic"):
        type(lm)(lm.model, engine="fast")
    with pytest.raises(ValueError, match="unknown engine 'fast'"):
        lm.engine = "fast"  # the one check, also for a model already built
    assert lm._uses_static_slots()
    monkeypatch.setattr("mcmc_llm.lm.hf.language_model.ATTENTION", ("eager",))  # as if SDPA could not take the 4-D mask
    assert not lm._uses_static_slots()  # auto: the dynamic engine
    assert not isinstance(lm.start(TokenBatch.from_lists([[5, 6]])), SlotState)
    lm.engine = "static"
    with pytest.raises(NotImplementedError, match="engine='static' needs .* uses 'sdpa'"):
        lm.start(TokenBatch.from_lists([[5, 6]]))


def test_engine_is_a_load_model_and_config_option():
    from mcmc_llm.evaluation import ConfigError, parse_config
    from mcmc_llm.evaluation.config import ENGINES
    from mcmc_llm.lm.hf import HFLanguageModel
    from mcmc_llm.lm.registry import load_model

    assert load_model("random:llama-tiny", device="cpu", dtype="float64", engine="dynamic").engine == "dynamic"
    with pytest.raises(ValueError, match="engine='static' applies to transformers models"):
        load_model("toy:derail", engine="static")
    with pytest.raises(ValueError, match="unknown engine 'fast'"):
        load_model("random:llama-tiny", device="cpu", engine="fast")
    assert ENGINES == HFLanguageModel.ENGINES  # the config keeps its own copy (it loads without torch)
    table = {"task": {"name": "arithmetic"}, "output": {"path": "x.jsonl"}, "methods": [{"name": "g", "kind": "greedy"}]}
    assert parse_config({**table, "model": {"engine": "dynamic"}}).model.engine == "dynamic"
    same = parse_config(table).fingerprint("g") == parse_config({**table, "model": {"engine": "static"}}).fingerprint("g")
    assert same, "the engine changes speed, not results: it must not change fingerprints"
    with pytest.raises(ConfigError, match="model.engine: must be one of auto, static, dynamic"):
        parse_config({**table, "model": {"engine": "fast"}})


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_rows_of_equal_length_decode_without_a_mask_and_match_the_full_forward(attention):
    """A decoding step whose rows all have the same length passes no mask (transformers' unmasked
    path); one with ragged rows passes the explicit 4-D mask.  Both match uncached forward passes."""
    lm = model("static")
    lm.model.set_attn_implementation(attention)
    tol = TOL64 if attention == "sdpa" else EAGER_TOL
    seen = []
    original = lm._decoder.forward

    def recording(*args, **kwargs):
        if kwargs.get(lm._cache_keyword) is not None:  # the engine's passes, not the reference's
            seen.append(kwargs.get("attention_mask") is None)
        return original(*args, **kwargs)

    lm._decoder.forward = recording
    try:
        rows = [[5, 6, 7], [8, 9, 10], [11, 12, 13]]
        state = lm.start(TokenBatch.from_lists(rows))
        for step in range(3):
            tokens = torch.tensor([1, 2, 3]) + step
            state = lm.advance(state, tokens)
            rows = [row + [int(t)] for row, t in zip(rows, tokens)]
            assert max_error(lm, state.logprobs, rows) < tol
        ragged = lm.advance(lm.start(TokenBatch.from_lists([[5, 6], [7]])), torch.tensor([1, 2]))
        assert max_error(lm, ragged.logprobs, [[5, 6, 1], [7, 2]]) < tol
    finally:
        del lm._decoder.forward
    assert seen == [False, True, True, True, False, False], seen  # prefill and ragged steps masked
