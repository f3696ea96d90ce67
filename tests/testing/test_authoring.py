"""Kernel authoring: `TwoPhaseSuffixProposal`, the `mcmc_llm.authoring` façade and `check_kernel`.

The how-to's two-phase proposal (docs/howto_custom_kernels.md, executed from the page) must fit in
20 lines and pass `check_kernel`; `check_kernel` must reject the stale-backward control at its
default setting and state each check's min detectable TV.  Every check is seeded (false-failure
rate 1e-4 each); the default-setting runs are slow (about 15 s each on an idle core).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import mcmc_llm.authoring as authoring
from mcmc_llm.authoring import (
    PowerSamplerConfig, Sampler, SamplingRule, SequenceBatch, Stage, TokenBatch, TwoPhaseSuffixProposal, check_kernel,
    load_toy, power_sample, suffix_log_q,
)
from mcmc_llm.core.random import Streams

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "howto_custom_kernels.md"
SMALL = dict(chains=500, steps=20, conservation_chains=2000)


def howto_example() -> str:
    """The how-to's code block that defines `DraftRevisionProposal` on the base class."""
    blocks = re.findall(r"```python\n(.*?)```", HOWTO.read_text(), flags=re.S)
    return next(block for block in blocks if "class DraftRevisionProposal(TwoPhaseSuffixProposal)" in block)


@pytest.fixture(scope="module")
def example():
    """The how-to's example executed up to (not including) its `check_kernel` call."""
    code = howto_example()
    namespace: dict = {}
    exec(code[: code.index("result = check_kernel")], namespace)  # noqa: S102 - the documentation's own code
    return namespace


def stale(example):
    """The stale-backward control: the backward term from the cached `log_q` (whatever drew x's suffix)."""

    class StaleBackward(example["DraftRevisionProposal"]):
        def under_samplers(self, position, plan):
            return position

    return lambda stage: StaleBackward(example["lm"], example["draft"], stage)


def test_the_howto_example_fits_in_20_lines_and_uses_one_module():
    code = howto_example()
    assert len(code.strip().splitlines()) <= 20, code
    imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert imports == [line for line in imports if line.startswith("from mcmc_llm.authoring import")] and len(imports) == 1
    assert "check_kernel(" in code


def test_the_howto_proposal_passes_check_kernel_at_small_settings(example):
    result = check_kernel(lambda stage: example["DraftRevisionProposal"](example["lm"], example["draft"], stage), example["lm"], **SMALL)
    assert result.passed, result.report
    assert set(result.sampling) == {"lockstep", "continuous"} and result.drivers_identical


@pytest.mark.slow
def test_the_howto_example_passes_at_its_default_setting(example):
    namespace: dict = {}
    exec(howto_example(), namespace)  # noqa: S102 - runs check_kernel with its defaults, as the page does
    assert namespace["result"].passed, namespace["result"].report


@pytest.mark.slow
def test_check_kernel_rejects_the_stale_backward_control_at_its_default_setting(example):
    result = check_kernel(stale(example), example["lm"], name="stale backward")
    assert not result.passed
    assert not result.invariance.passed, result.report  # the ratio is wrong: invariance fails whatever the mixing
    assert result.invariance.min_detectable_tv < 0.03  # 20,000 exact draws
    assert f"detects TV >= {result.invariance.min_detectable_tv:.3g}" in result.report
    assert "FAILED (invariance" in result.report


def test_the_report_states_each_checks_power_and_verdicts(example):
    result = check_kernel(stale(example), example["lm"], name="stale backward", **SMALL)
    assert f"detects TV >= {result.invariance.min_detectable_tv:.3g}" in result.report
    for run in result.sampling.values():
        assert f"detects TV >= {run.chi_square.min_detectable_tv:.3g}" in result.report
        assert f"detects TV >= {run.total_variation.min_detectable_tv:.3g}" in result.report
    assert "false-failure rate 0.0001 per check" in result.report and "<= 0.0005" in result.report
    assert result.passed == all(result.checks.values())
    assert str(result) == result.report


def test_check_kernel_takes_a_cut_rule_and_refuses_a_proposal_object():
    lm = load_toy("trigram")
    result = check_kernel("uniform", lm, batchings=("lockstep",), **SMALL)
    assert result.passed, result.report
    proposal = authoring.SuffixResampling(lm, SamplingRule(1.0), "uniform", 4)
    with pytest.raises(TypeError, match="proposal factory"):
        check_kernel(proposal, lm)
    with pytest.raises(ValueError, match="batchings must name drivers"):
        check_kernel("uniform", lm, batchings=("sideways",))
    with pytest.raises(ValueError, match="chains must be a positive integer, got 0"):
        check_kernel("uniform", lm, chains=0)


def _position(lm, sequences, rule=SamplingRule(0.5)):
    return SequenceBatch.from_sequences(lm, rule, TokenBatch.from_lists([[]] * len(sequences)), sequences, capacity=4)


def test_the_backward_term_is_under_the_sampler_of_the_cut(example):
    """log q(x | x') = log P(m | x') + the old suffix re-scored under s(m), though x was drawn at another
    temperature; the stale control's differs."""
    lm, draft = example["lm"], example["draft"]
    proposal = example["DraftRevisionProposal"](lm, draft, Stage(1, 4, 2))
    position = _position(lm, [[1, 2, 3, 1]] * 64)
    source = Streams.for_chains(0, 0, torch.arange(64))
    move = proposal.propose(source, position)
    cut, index = move.details["cut_index"], move.details["sampler_index"]
    assert set(index.tolist()) == {0, 1} and torch.equal(index, (cut < 2).long())
    log_cut = torch.log(1.0 / move.position.lengths.double())  # uniform cuts: P(m | x') = 1 / L'
    for sampler_id, sampler in enumerate(proposal.samplers):
        rows = index == sampler_id
        backward = log_cut[rows] + suffix_log_q(position, cut, sampler)[rows]
        assert torch.allclose(move.log_q_backward[rows], backward.to(move.log_q_backward))
    stale_move = stale(example)(Stage(1, 4, 2)).propose(source, position)
    assert not torch.allclose(stale_move.log_q_backward, move.log_q_backward)


def test_a_row_without_an_allowed_cut_makes_the_identity_move():
    lm = load_toy("trigram")
    proposal = TwoPhaseSuffixProposal(lm, Sampler(lm, SamplingRule(1.0)), "within-block", 4, block_start=2)
    position = _position(lm, [[1, 0], [1, 2, 3]])  # the first has no position in the block [2, 4)
    plan = proposal.plan(Streams.for_chains(0, 0, torch.arange(2)), position)
    assert plan.max_new_tokens.tolist()[0] == 0 and plan.movable.tolist() == [False, True]
    move = proposal.propose(Streams.for_chains(0, 0, torch.arange(2)), position)
    assert move.log_q_forward[0] == 0 and move.log_q_backward[0] == 0
    assert move.position.to_lists()[0] == [1, 0]
    assert proposal.reads_lengths_only


def test_the_base_class_refuses_bad_samplers():
    lm = load_toy("trigram")
    with pytest.raises(ValueError, match="share the reference LM's vocabulary"):
        TwoPhaseSuffixProposal(lm, Sampler(load_toy("bigram"), SamplingRule(1.0)), "uniform", 4)
    with pytest.raises(ValueError, match="samplers must be one Sampler"):
        TwoPhaseSuffixProposal(lm, (), "uniform", 4)

    class OutOfRange(TwoPhaseSuffixProposal):
        def sampler_for(self, cut_index):
            return torch.ones_like(cut_index)

    proposal = OutOfRange(lm, Sampler(lm, SamplingRule(1.0)), "uniform", 4)
    with pytest.raises(ValueError, match=r"sampler_for must give one index in \[0, 1\) per chain"):
        proposal.plan(Streams.for_chains(0, 0, torch.arange(2)), _position(lm, [[1, 0], [1, 2, 3]]))


def test_power_sample_refuses_config_settings_a_proposal_overrides():
    lm = load_toy("trigram")
    factory = lambda stage: authoring.SuffixResampling(lm, SamplingRule(1.0), "uniform", stage.cap, block_start=stage.block_start)  # noqa: E731
    config = PowerSamplerConfig(alpha=3.0, block_size=2, max_new_tokens=4, mcmc_steps=1)
    with pytest.raises(ValueError, match="cut_rule='restart' has no effect with proposal="):
        power_sample(lm, [[]], dataclasses.replace(config, cut_rule="restart"), proposal=factory)
    with pytest.raises(ValueError, match="ratio='published' has no effect with proposal="):
        power_sample(lm, [[]], dataclasses.replace(config, ratio="published"), proposal=factory)
    assert len(power_sample(lm, [[]], config, chains_per_prompt=2, proposal=factory).sequences()) == 2


def test_the_facade_exports_what_it_lists():
    assert all(getattr(authoring, name) is not None for name in authoring.__all__)
    assert authoring.Stage is Stage and authoring.check_kernel is check_kernel
    from mcmc_llm.drivers.power_config import Stage as defined

    assert Stage is defined  # re-exported, not redefined
