"""The generation path's continuous batching: requests that join a running batch as others finish.

`ContinuousBatch` must give every request the same law and the same per-token statistics as if it
had been generated alone, whatever rows it shared its decoding steps with.
"""

from __future__ import annotations

import math

import pytest
import torch

from mcmc_llm.core.random import make_generator
from mcmc_llm.lm.exact import tempered_law
from mcmc_llm.lm.generation import ContinuousBatch, SamplingRule, sample_continuations, score_continuations
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.testing import chi_square_check, counts_from_samples, samples_to_detect_tv_for_pmf

CAP, TAU = 4, 0.5


def refill_run(lm, rule, total: int, live: int, seed: int, prompts=([],)):
    """Keep `live` requests in flight; each finished request is replaced at once, until `total`
    have been submitted.  Prompts (and caps 0..CAP) rotate, so rows of all kinds share steps."""
    engine = ContinuousBatch(lm, rule, make_generator(seed))
    submitted, results = 0, {}
    contexts = {}

    def submit(count):
        nonlocal submitted
        keys = list(range(submitted, submitted + count))
        for key in keys:
            contexts[key] = list(prompts[key % len(prompts)])
        caps = torch.tensor([CAP if key % 7 else key % 3 for key in keys])  # some caps 0, 1, 2
        engine.submit(keys, TokenBatch.from_lists([contexts[k] for k in keys]), caps)
        submitted += count

    submit(live)
    steps = 0
    while engine.busy:
        keys, done = engine.step()
        steps += 1
        for row, key in enumerate(keys):
            results[key] = (done.tokens.ids[row, : int(done.tokens.lengths[row])].tolist(),
                            {name: getattr(done, name)[row, : int(done.tokens.lengths[row])] for name in ("log_p", "log_q", "entropy")},
                            bool(done.ended[row]))
        if submitted < total and keys:
            submit(min(len(keys), total - submitted))
    return results, contexts, steps


def test_refilled_requests_carry_the_statistics_of_their_own_tokens():
    lm = load_toy("trigram")
    rule = SamplingRule(TAU)
    results, contexts, _ = refill_run(lm, rule, total=200, live=16, seed=3, prompts=([], [1], [2, 3]))
    assert sorted(results) == list(range(200))
    keys = sorted(results)
    tokens = TokenBatch.from_lists([results[k][0] for k in keys])
    scored = score_continuations(lm, TokenBatch.from_lists([contexts[k] for k in keys]), tokens, rule)
    for row, key in enumerate(keys):
        drawn, stats, ended = results[key]
        cap = CAP if key % 7 else key % 3
        assert len(drawn) <= cap and ended == (len(drawn) > 0 and drawn[-1] in lm.eos_token_ids)
        assert ended or len(drawn) == cap, f"request {key} stopped early without EOS"
        for name, value in stats.items():
            assert torch.allclose(value, getattr(scored, name)[row, : len(drawn)], atol=1e-12), (key, name)


def test_refilled_requests_follow_the_tempered_law_and_the_check_has_power():
    """Chi-square (false-failure rate 1e-4) of requests that joined a running batch against the
    exact tempered law on S_4, sized to detect TV 0.02 over its pooled bins with power >= 0.9 (~44,000
    full-cap requests of ~52,000; the engine is batched, so this takes ~2 s); the same draws are
    rejected against the base law."""
    lm = load_toy("trigram")
    law = tempered_law(lm, CAP, TAU)
    full_cap_needed = samples_to_detect_tv_for_pmf(0.02, law.probs(), 1e-4)
    total = math.ceil(full_cap_needed * 7 / 6) + 7  # one request in 7 has a cap below CAP
    results, _, steps = refill_run(lm, SamplingRule(TAU), total=total, live=300, seed=5)
    full_cap = [tuple(results[k][0]) for k in results if k % 7]
    check = chi_square_check(counts_from_samples(full_cap, law.sequences), law.probs(), 1e-4)
    assert check.passed, check.message
    assert check.min_detectable_tv <= 0.02, check.message
    assert steps < total / 300 * (CAP + 1), "requests did not share decoding steps"
    wrong = tempered_law(lm, CAP, 1.0)
    assert not chi_square_check(counts_from_samples(full_cap, wrong.sequences), wrong.probs(), 1e-4).passed


def test_sample_continuations_is_the_engine_with_everything_submitted_at_once():
    lm = load_toy("bigram")
    contexts = TokenBatch.from_lists([[1], [], [2, 3], [1]])
    caps = torch.tensor([3, 0, 2, 5])
    drawn = sample_continuations(lm, contexts, caps, SamplingRule(), make_generator(7))
    engine = ContinuousBatch(lm, SamplingRule(), make_generator(7))
    engine.submit(range(4), contexts, caps)
    rows = {}
    while engine.busy:
        keys, done = engine.step()
        rows.update({key: done.tokens.ids[i, : int(done.tokens.lengths[i])].tolist() for i, key in enumerate(keys)})
    assert [rows[k] for k in range(4)] == drawn.tokens.to_lists()
    assert drawn.tokens.lengths[1] == 0 and drawn.tokens.ids.shape[1] == 5


def test_bad_requests_are_refused():
    engine = ContinuousBatch(load_toy("tiny"), SamplingRule(), make_generator(0))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0, got -1"):
        engine.submit([0], TokenBatch.from_lists([[1]]), torch.tensor([-1]))
    with pytest.raises(ValueError, match="got 2 keys for 1 contexts"):
        engine.submit([0, 1], TokenBatch.from_lists([[1]]), 2)


def test_cancelled_requests_leave_the_batch_and_the_others_keep_their_own_statistics():
    """Cancelling a live and a queued request: neither finishes, the tokens they drew move from
    `tokens_sampled` to `tokens_discarded`, and the rows left keep their own tokens and statistics
    (scored afresh; a row misaligned by the cancellation would not match)."""
    lm = load_toy("trigram")
    rule = SamplingRule(TAU)
    lm.counter.reset()
    engine = ContinuousBatch(lm, rule, make_generator(6))
    contexts = {"a": [1], "b": [2], "c": [1, 2], "d": [3]}
    engine.submit(["a", "b", "c"], TokenBatch.from_lists([contexts[k] for k in "abc"]), 8)
    done_keys, _ = engine.step()  # a, b and c are live; one token drawn for each
    assert not done_keys
    engine.submit(["d"], TokenBatch.from_lists([contexts["d"]]), 8)  # queued
    assert engine.rows == 4
    engine.cancel(["b", "d", "never-submitted"])
    assert engine.rows == 2
    results = {}
    while engine.busy:
        keys, done = engine.step()
        for i, key in enumerate(keys):
            length = int(done.tokens.lengths[i])
            results[key] = (done.tokens.ids[i, :length].tolist(), done.log_p[i, :length], done.log_q[i, :length])
    assert sorted(results) == ["a", "c"]
    counts = lm.counter.snapshot()
    assert counts["tokens_sampled"] == sum(len(tokens) for tokens, _, _ in results.values())
    assert counts["tokens_discarded"] == 1  # b's first token; d never drew one
    scored = score_continuations(lm, TokenBatch.from_lists([contexts[k] for k in "ac"]),
                                 TokenBatch.from_lists([results[k][0] for k in "ac"]), rule)
    for row, key in enumerate("ac"):
        length = len(results[key][0])
        torch.testing.assert_close(results[key][1], scored.log_p[row, :length])
        torch.testing.assert_close(results[key][2], scored.log_q[row, :length])
