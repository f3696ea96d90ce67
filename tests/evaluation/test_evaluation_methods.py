"""Methods: sample counts, determinism, the one generation path (via the ComputeCounter),
budget matching, selection rules, and pass@k."""

from __future__ import annotations

import dataclasses
import math
from itertools import combinations

import numpy as np
import pytest
import torch

from mcmc_llm.evaluation.methods import (
    BaseSampling, BestOfN, GreedyDecoding, LowTemperatureSampling, MajorityVote, PowerSampling, RolloutSampling,
    SMCSampling, matched_n, power_token_budget,
)
from mcmc_llm.evaluation.results import summarize
from mcmc_llm.lm.protocol import CallableLM, TokenBatch
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.drivers.power import PowerSamplerConfig
from mcmc_llm.rollout import RolloutConfig
from mcmc_llm.rollout.outputs import rollout_chains
from mcmc_llm.smc.outputs import smc_chains
from mcmc_llm.smc import SMCConfig
from mcmc_llm.tasks import pass_at_k

POWER = PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=8, mcmc_steps=2)
METHODS = {
    "base": BaseSampling(max_new_tokens=8),
    "low_temperature": LowTemperatureSampling(max_new_tokens=8, alpha=4.0),
    "greedy": GreedyDecoding(max_new_tokens=8),
    "power": PowerSampling(POWER),
    "best_of_n": BestOfN(max_new_tokens=8, n=3, select="mean_log_p"),
    "majority_vote": MajorityVote(max_new_tokens=8, n=3, sampler="low_temperature"),
}
PROMPTS = [[1, 2], [3], [2, 2, 4]]


@pytest.mark.parametrize("kind", sorted(METHODS))
def test_shapes_determinism_and_generation_path(kind):
    method = METHODS[kind]
    lm = load_toy("bigram")
    out = method.generate(lm, PROMPTS, 3, seed=11)
    assert [len(row) for row in out] == [3, 3, 3]
    for row in out:
        for sample in row:
            assert sample.length == len(sample.tokens) <= 8
            assert sample.ended == (sample.length > 0 and sample.tokens[-1] in lm.eos_token_ids)
            assert 0 not in sample.tokens[:-1]  # EOS only at the end
            assert math.isfinite(sample.log_p) and sample.log_p <= 0
            assert set(sample.compute) == {"tokens_sampled", "tokens_discarded", "tokens_rejected_early", "tokens_encoded", "forward_passes", "attention_positions", "tokens_overrun"}
    # every token was drawn by sample_continuations, the only code that counts tokens_sampled
    sampled = lm.counter.tokens_sampled
    output_tokens = sum(s.length for row in out for s in row)
    assert sampled >= output_tokens > 0
    if kind in ("base", "low_temperature", "greedy"):
        assert sampled == output_tokens
    if kind in ("best_of_n", "majority_vote"):
        assert sampled == sum(s.diagnostics["candidate_tokens"] for row in out for s in row)
    if kind == "power":
        resampled = sum(s.diagnostics["tokens_resampled"] for row in out for s in row)
        assert resampled < sampled <= resampled + 9 * 8  # plus the extensions, at most the cap per chain
    assert sum(s.compute["tokens_sampled"] for row in out for s in row) == pytest.approx(sampled)
    again = method.generate(load_toy("bigram"), PROMPTS, 3, seed=11)
    assert again == out
    other = method.generate(load_toy("bigram"), PROMPTS, 3, seed=12)
    if kind != "greedy":
        assert other != out


def test_greedy_is_the_argmax_path_whatever_the_seed():
    lm = load_toy("trigram")
    runs = [GreedyDecoding(max_new_tokens=6).generate(lm, [[1]], 2, seed=s)[0] for s in (0, 1, 2)]
    assert all(run[0].tokens == runs[0][0].tokens for run in runs) and runs[0][0].tokens == runs[0][1].tokens
    context, log_p = [1], 0.0
    for token in runs[0][0].tokens:  # each token is the argmax of the model's next-token law
        logprobs = torch.log_softmax(lm.next_token_logprobs(TokenBatch.from_lists([context])).double(), -1)[0]
        assert token == int(logprobs.argmax())
        log_p += float(logprobs[token])
        context.append(token)
    assert runs[0][0].log_p == pytest.approx(log_p)


def test_low_temperature_default_is_one_over_alpha():
    assert LowTemperatureSampling(alpha=4.0).rule().temperature == 0.25
    assert LowTemperatureSampling(alpha=2.0, temperature=0.7).rule().temperature == 0.7
    assert LowTemperatureSampling(alpha=math.inf).rule().temperature == 0.25
    assert BaseSampling().rule().full_support and BestOfN(n=2).rule().temperature == 1.0
    with pytest.raises(ValueError, match="sampler must be one of base, low_temperature"):
        BestOfN(n=2, sampler="cold")
    with pytest.raises(ValueError, match="select must be one of log_p, mean_log_p"):
        BestOfN(n=2, select="reward")


def _no_eos_lm(vocab: int = 4) -> CallableLM:
    """EOS (token 0) has probability 0: every sequence fills its cap, so the budget formula is exact in mean."""
    logits = torch.tensor([-math.inf] + [0.3 * v for v in range(1, vocab)], dtype=torch.float64)
    return CallableLM(lambda prefixes: logits.expand(len(prefixes), vocab), vocab_size=vocab, eos_token_ids=[0])


@pytest.mark.parametrize("kernel", ["uniform", "within-block", "restart"])
def test_power_token_budget_matches_measured_tokens(kernel):
    """Mean tokens sampled per chain against `power_token_budget`, within 5 standard errors
    (each step resamples a uniform number of tokens; false-failure rate < 1e-6)."""
    config = PowerSamplerConfig(alpha=2.0, block_size=4, max_new_tokens=12, mcmc_steps=3, cut_rule=kernel)
    chains = 200
    out = PowerSampling(config).generate(_no_eos_lm(), [[1]], chains, seed=5)[0]
    totals = np.array([s.diagnostics["tokens_resampled"] + 12 for s in out], dtype=float)  # resampled + extensions
    expected = power_token_budget(config)
    sd = totals.std(ddof=1) / math.sqrt(chains)
    assert abs(totals.mean() - expected) < 5 * max(sd, 1e-9), (totals.mean(), expected)
    assert out[0].compute["tokens_sampled"] == pytest.approx(totals.mean())


def test_best_of_n_picks_the_most_likely_candidate():
    lm = load_toy("bigram")
    for select, score in (("log_p", lambda lp, n: lp), ("mean_log_p", lambda lp, n: lp / max(n, 1))):
        (row,) = BestOfN(max_new_tokens=8, n=5, select=select).generate(lm, [[1]], 4, seed=3)
        for sample in row:
            d = sample.diagnostics
            scores = [score(lp, n) for lp, n in zip(d["candidate_log_p"], d["candidate_lengths"])]
            assert d["n"] == 5 and d["chosen"] == int(np.argmax(scores))
            assert sample.log_p == d["candidate_log_p"][d["chosen"]]
            assert d["candidate_tokens"] == sum(d["candidate_lengths"])


def test_majority_vote_uses_answer_of():
    lm = load_toy("bigram")
    first = lambda tokens: str(tokens[0]) if tokens else None  # noqa: E731
    (row,) = MajorityVote(max_new_tokens=6, n=7).generate(lm, [[2]], 3, seed=4, answer_of=first)
    for sample in row:
        votes = sample.diagnostics["votes"]
        assert sum(votes.values()) == 7 and votes[sample.diagnostics["answer"]] == max(votes.values())
        assert first(sample.tokens) == sample.diagnostics["answer"]
    (row,) = MajorityVote(max_new_tokens=6, n=3).generate(lm, [[2]], 1, seed=4, answer_of=lambda tokens: None)
    d = row[0].diagnostics  # nobody answers: the most likely candidate, no answer
    assert d["answer"] is None and d["votes"] == {} and d["chosen"] == int(np.argmax(d["candidate_log_p"]))


def test_matched_n():
    assert matched_n(22.0, 8) == 3 and matched_n(1.0, 100) == 1 and matched_n(1000, 100) == 10
    with pytest.raises(ValueError):
        matched_n(10, 0)


def test_pass_at_k_known_values():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    for n in range(1, 9):  # brute force: P(some of k draws without replacement is correct)
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))
                exact = sum(any(i < c for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # stable at large n


def test_summary_pass_at_k_and_accuracy():
    records = [{"task_id": t, "method": "m", "kind": "base", "sample_index": i, "passed": p, "length": 3,
                "compute": {"tokens_sampled": 3}, "wall_time_s": 0.1}
               for t, passes in (("a", [1, 0, 0, 0]), ("b", [1, 1, 0, 0]), ("c", [0, 0, 0, 0])) for i, p in enumerate(passes)]
    (summary,) = summarize(records)
    assert summary.problems == 3 and summary.samples == 12
    assert summary.accuracy == pytest.approx((0.25 + 0.5 + 0) / 3)
    assert sorted(summary.pass_at) == [1, 2, 4]
    assert summary.pass_at[2] == pytest.approx((pass_at_k(4, 1, 2) + pass_at_k(4, 2, 2)) / 3)
    assert summary.pass_at[4] == pytest.approx(2 / 3)


SMC_METHODS = {
    "smc": SMCSampling(SMCConfig(max_new_tokens=8, alpha=2.0, num_particles=4, ess_threshold=0.9)),
    "rollout": RolloutSampling(RolloutConfig(max_new_tokens=8, alpha=2.0, top_candidates=3, rollouts=2)),
}
SMC_DIAGNOSTICS = {
    "smc": {"log_normalizer", "final_ess", "resampling_events", "distinct_particles"},
    "rollout": {"min_tempered_mass_covered", "jackknife_clipped_steps"},
}


@pytest.mark.parametrize("kind", sorted(SMC_METHODS))
def test_smc_and_rollout_methods(kind):
    method = SMC_METHODS[kind]
    lm = load_toy("trigram")
    out = method.generate(lm, PROMPTS, 3, seed=11)
    assert [len(row) for row in out] == [3, 3, 3]
    for row in out:
        for sample in row:
            assert sample.length == len(sample.tokens) <= 8
            assert sample.ended == (sample.length > 0 and sample.tokens[-1] in lm.eos_token_ids)
            assert math.isfinite(sample.log_p) and sample.log_p <= 0
            assert set(sample.diagnostics) == SMC_DIAGNOSTICS[kind]
            assert set(sample.compute) == {"tokens_sampled", "tokens_discarded", "tokens_rejected_early", "tokens_encoded", "forward_passes", "attention_positions", "tokens_overrun"}
            if kind == "smc":
                d = sample.diagnostics
                assert math.isfinite(d["log_normalizer"]) and 1 <= d["final_ess"] <= 4 + 1e-9
                assert 1 <= d["distinct_particles"] <= 4 and d["resampling_events"] >= 0
    sampled = lm.counter.tokens_sampled
    assert sampled >= sum(s.length for row in out for s in row) > 0
    if kind == "smc":  # every particle of every run grows by one token per step: at least P tokens per output token
        assert sampled >= 4 * max(s.length for row in out for s in row)
        assert any(s.diagnostics["resampling_events"] > 0 for row in out for s in row)
    assert sum(s.compute["tokens_sampled"] for row in out for s in row) == pytest.approx(sampled)
    assert method.generate(load_toy("trigram"), PROMPTS, 3, seed=11) == out
    assert method.generate(load_toy("trigram"), PROMPTS, 3, seed=12) != out
    # the same draws as `mcmc-llm sample --sampler smc|rollout` (shared code in mcmc_llm.smc.outputs)
    chains = smc_chains if kind == "smc" else rollout_chains
    final, extras, _ = chains(load_toy("trigram"), PROMPTS, method.config, 3, 11)
    assert final.to_lists() == [s.tokens for row in out for s in row]
    assert extras == [s.diagnostics for row in out for s in row]


def test_smc_and_rollout_settings_are_validated():
    assert SMCSampling.from_keys(512, alpha=2.0, particles=8).config.num_particles == 8
    assert SMCSampling.from_keys(512, alpha=2.0).config.temperature == 0.5
    assert RolloutSampling.from_keys(512, rollouts=3, jackknife=False).config.jackknife is False
    assert SMCSampling().settings()["kind"] == "smc" and RolloutSampling().settings()["top_candidates"] == 8
    assert SMCSampling().max_new_tokens == RolloutSampling().max_new_tokens == 512
    with pytest.raises(ValueError, match="num_particles must be a positive integer, got 0"):
        SMCSampling.from_keys(512, particles=0)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        RolloutSampling.from_keys(512, alpha=math.inf)
    with pytest.raises(ValueError, match="unknown cut rule .nope."):
        SMCSampling.from_keys(512, rejuvenation_cut_rule="nope")
    with pytest.raises(ValueError, match="rejuvenate must be one of end, resampling, got 'never'"):
        SMCSampling.from_keys(512, rejuvenate="never")
    with pytest.raises(TypeError, match="unknown smc keys num_particles; allowed: alpha, particles"):
        SMCSampling.from_keys(512, num_particles=4)
    with pytest.raises(TypeError, match="config must be a SMCConfig"):
        SMCSampling(RolloutConfig())


def test_smc_and_rollout_keys_are_the_fields_of_their_configs():
    """One definition per config: every field of SMCConfig / RolloutConfig is a key of the method,
    and a field that is not set to a non-default value leaves the settings (fingerprints) alone."""
    assert set(SMCSampling.keys().values()) == {f.name for f in dataclasses.fields(SMCConfig)} - {"max_new_tokens"}
    assert set(RolloutSampling.keys().values()) == {f.name for f in dataclasses.fields(RolloutConfig)} - {"max_new_tokens"}
    assert SMCSampling.keys()["particles"] == "num_particles" and "rejuvenate" in SMCSampling.keys()
    default = SMCSampling().settings()
    assert "rejuvenate" not in default and set(default) == {"kind", *SMCSampling.recorded}
    assert SMCSampling.from_keys(512, rejuvenate="resampling").settings() == {**default, "rejuvenate": "resampling"}
    assert set(RolloutSampling().settings()) == {"kind", *RolloutSampling.recorded}
