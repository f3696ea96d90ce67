"""Per-chain random streams: a chain's draws depend only on (seed, prompt index, chain index).

Checked exactly on toy LMs (whose log-probabilities do not depend on the batch): adding chains or
prompts, lock-step against continuous batching, and pre-fetching (including deep pre-fetching of
both branches with three rows per chain) all give bit-identical chains and traces.  The streams
themselves are checked for uniformity with a chi-square test at false-failure rate 1e-4.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mcmc_llm.cli import main
from mcmc_llm.core.random import Streams, categorical, normal, uniform
from mcmc_llm.drivers import power as power_module
from mcmc_llm.drivers.asynchronous import AsynchronousChains
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.testing import chi_square_check

CONFIG = PowerSamplerConfig(alpha=4.0, block_size=2, max_new_tokens=6, mcmc_steps=4)


def _run(lm, prompts, chains, config=CONFIG, **changes):
    return power_sample(lm, prompts, dataclasses.replace(config, **changes), chains_per_prompt=chains, seed=3)


def _same_chains(a, b, rows):
    """Sequences and every trace array agree on `rows` of `a` (all of b)."""
    assert a.sequences()[rows] == b.sequences()
    for group in ("samples", "stats"):
        left, right = getattr(a.trace, group), getattr(b.trace, group)
        for name in right:
            if name == "prefetched":
                continue  # which proposals were pre-fetched is the one thing that may differ
            assert np.array_equal(left[name][rows], right[name], equal_nan=True), name


@pytest.mark.parametrize("model", ["derail", "bigram", "trigram"])
def test_adding_chains_prompts_or_changing_the_batching_leaves_each_chain_unchanged(model):
    lm = load_toy(model)
    base = _run(lm, [[]], 8)
    _same_chains(_run(lm, [[]], 9), base, slice(0, 8))
    _same_chains(_run(lm, [[]], 8, batching="lockstep"), base, slice(None))
    _same_chains(_run(lm, [[]], 8, prefetch=False), base, slice(None))
    two_prompts = _run(lm, [[], [1]], 8)
    _same_chains(two_prompts, base, slice(0, 8))
    _same_chains(_run(lm, [[], [1], [2]], 8), two_prompts, slice(0, 16))


def test_deep_prefetching_of_both_branches_leaves_each_chain_unchanged(monkeypatch):
    """Three rows per chain: every chain pre-fetches on the reject path and on acceptance."""
    lm = load_toy("trigram")
    plain = _run(lm, [[]], 40, prefetch=False)

    def run(proposer, rule, start, *args, **options):
        return AsynchronousChains(proposer, rule, start, *args, rows=3 * start.num_chains, **options).run()

    monkeypatch.setattr(power_module, "run_asynchronous_chains", run)
    deep = _run(lm, [[]], 40)
    assert deep.trace.stats["prefetched"].mean() > 0.3
    assert deep.compute["tokens_discarded"] > 0
    _same_chains(deep, plain, slice(None))


def test_seeds_and_kernels_change_the_draws():
    lm = load_toy("trigram")
    base = _run(lm, [[]], 50)
    other_seed = power_sample(lm, [[]], CONFIG, chains_per_prompt=50, seed=4)
    assert base.sequences() != other_seed.sequences()
    restart = _run(lm, [[]], 50, cut_rule="restart")
    assert base.sequences() != restart.sequences()


def _cli_tokens(tmp_path, model, *extra):
    out = tmp_path / f"{model.replace(':', '_')}_{'_'.join(extra).replace('-', '')}.jsonl"
    code = main(["sample", "--model", model, "--max-new-tokens", "6", "--block-size", "2", "--mcmc-steps", "4",
                 "--out", str(out), *extra])
    assert code in (0, None)
    return [json.loads(line)["tokens"] for line in out.read_text().splitlines()]


@pytest.mark.parametrize("model", ["toy:derail", "toy:bigram"])
def test_cli_chains_and_batching_are_deterministic_per_chain(tmp_path, model, capsys):
    eight = _cli_tokens(tmp_path, model, "--chains", "8")
    assert _cli_tokens(tmp_path, model, "--chains", "9")[:8] == eight
    assert _cli_tokens(tmp_path, model, "--chains", "8", "--batching", "lockstep") == eight
    assert _cli_tokens(tmp_path, model, "--chains", "8", "--cut-rule", "restart") == _cli_tokens(
        tmp_path, model, "--chains", "8", "--cut-rule", "restart")  # and deterministic with another cut rule


def test_streams_are_uniform_and_their_labels_independent():
    streams = Streams.for_chains(0, 0, torch.arange(100_000))
    draws = uniform(streams, torch.zeros(100_000, dtype=torch.float64))
    counts = np.bincount((draws.numpy() * 50).astype(int), minlength=50)
    check = chi_square_check(counts, np.full(50, 1 / 50), 1e-4)
    assert check.passed, check.message
    assert check.min_detectable_tv <= 0.02, check.message  # 1e5 draws, 50 bins: TV 0.013 with power >= 0.9
    assert 0 < float(draws.min()) and float(draws.max()) < 1
    again = uniform(streams, torch.zeros(100_000))  # the next draw of the same object: fresh numbers
    assert abs(float(np.corrcoef(draws.numpy(), again.numpy())[0, 1])) < 0.02
    child = uniform(Streams.for_chains(0, 0, torch.arange(100_000)).split("accept"), torch.zeros(100_000))
    assert abs(float(np.corrcoef(draws.numpy(), child.numpy())[0, 1])) < 0.02
    noise = normal(Streams.for_chains(1, 0, torch.arange(100_000)), torch.zeros(100_000, dtype=torch.float64))
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02


def test_a_sub_batch_draws_what_its_chains_draw_in_the_full_batch():
    streams = Streams.for_chains(5, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]))
    weights = torch.log(torch.tensor([[0.2, 0.3, 0.5]] * 4))
    full = categorical(streams.split("cut"), weights)
    rows = torch.tensor([3, 1])
    assert torch.equal(categorical(streams.gather(rows).split("cut"), weights[rows]), full[rows])
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        Streams.for_chains(-1, 0, 0)
    with pytest.raises(ValueError, match="4 streams cannot draw a tensor of shape \\(3,\\)"):
        uniform(streams, torch.zeros(3))


class _TwoPhaseOnly:
    """A user's proposal with plan / complete and nothing else (no `propose`, no `cut_rule`)."""

    def __init__(self, inner):
        self.inner, self.reads_lengths_only = inner, inner.reads_lengths_only

    def plan(self, source, position):
        return self.inner.plan(source, position)

    def complete(self, position, plan, continuation):
        return self.inner.complete(position, plan, continuation)


def test_a_two_phase_user_proposal_runs_in_both_batchings_with_the_same_chains():
    from mcmc_llm.lm.generation import SamplingRule
    from mcmc_llm.proposals.suffix import SuffixResampling

    lm = load_toy("trigram")

    def proposal(stage):
        return _TwoPhaseOnly(SuffixResampling(lm, SamplingRule(0.5), "uniform", stage.cap, block_start=stage.block_start))

    runs = {batching: power_sample(lm, [[]], dataclasses.replace(CONFIG, batching=batching), chains_per_prompt=12, seed=3,
                                   proposal=proposal) for batching in ("continuous", "lockstep")}
    _same_chains(runs["lockstep"], runs["continuous"], slice(None))
    with pytest.raises(TypeError, match="the proposal for stage 0 is a object, not a two-phase suffix proposal"):
        power_sample(lm, [[]], CONFIG, proposal=lambda stage: object())


def test_stream_uniforms_hash_on_the_tensors_device_with_the_same_bits():
    """The engine's per-token draws (`stream_uniforms`, int64 tensor ops that run on a GPU too) are the
    host hash's bits exactly, for any keys and labels (negative ones included), and so are its tokens."""
    from mcmc_llm.core.random import categorical, inverse_cdf, stream_uniforms

    generator = torch.Generator().manual_seed(5)
    keys = torch.randint(-(2**63), 2**63 - 1, (4096,), generator=generator, dtype=torch.int64)
    labels = torch.cat([torch.arange(2048), torch.randint(-(2**63), 2**63 - 1, (2048,), generator=generator, dtype=torch.int64)])
    on_device = stream_uniforms(keys, labels)
    on_host = Streams(keys).split(labels).uniform((4096,))
    assert torch.equal(on_device, on_host)  # bit for bit
    log_weights = torch.log_softmax(torch.randn(4096, 50, generator=generator, dtype=torch.float64), -1)
    assert torch.equal(inverse_cdf(log_weights, on_device), categorical(Streams(keys).split(labels), log_weights))
