"""experiments/custom_kernel.py, the user-written cut rule and proposal, checked against exact laws.

Unit tests of the script's cut rule and proposal, and a run of the script at small settings (1000
chains x 30 steps, 4000 exact draws for the invariance check; every check seeded, false-failure
rate 1e-4 each).  The full run (6000 chains x 60 steps) is a line of .ci/run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "custom_kernel.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("custom_kernel_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_late_half_cut_law(example):
    """P(m | x) uniform on floor(L/2) <= m < L, -inf elsewhere; a length-only rule."""
    lm = example.load_toy("trigram")
    from mcmc_llm.lm.generation import SamplingRule
    from mcmc_llm.lm.protocol import TokenBatch
    from mcmc_llm.lm.sequences import SequenceBatch

    sequences = [[0], [1, 0], [1, 2, 0], [1, 2, 3, 0], [1, 2, 3, 1, 2]]
    position = SequenceBatch.from_sequences(lm, SamplingRule(), TokenBatch.from_lists([[]] * 5), sequences, capacity=6)
    law = torch.exp(example.LateHalfCut().log_probs(position, 0))
    for row, sequence in enumerate(sequences):
        length = len(sequence)
        expected = [1.0 / (length - length // 2) if length // 2 <= m < length else 0.0 for m in range(6)]
        assert law[row].tolist() == pytest.approx(expected)
    assert example.LateHalfCut().reads_lengths_only
    assert example.LateHalfCut().expected_resampled(4, 0) == pytest.approx(1.5)  # m in {2, 3}: resamples 2 or 1


def test_draft_proposal_plans_by_cut(example):
    """Cuts before the block use the draft (sampler 1), cuts inside it the target's LM (sampler 0)."""
    from mcmc_llm.core.random import Streams
    from mcmc_llm.lm.generation import SamplingRule
    from mcmc_llm.lm.protocol import TokenBatch
    from mcmc_llm.lm.sequences import SequenceBatch

    lm = example.load_toy("trigram")
    proposal = example.DraftRevisionProposal(lm, example.draft_model(lm), example.Stage(1, 4, 2), temperature=1.0, draft_temperature=1.0)
    chains = 400
    position = SequenceBatch.from_sequences(lm, SamplingRule(), TokenBatch.from_lists([[]] * chains), [[1, 2, 3, 1]] * chains, capacity=4)
    plan = proposal.plan(Streams.for_chains(0, 0, torch.arange(chains)), position)
    assert torch.equal(plan.sampler_index, (plan.cut_index < 2).long())
    assert torch.equal(plan.max_new_tokens, 4 - plan.cut_index)
    assert set(plan.cut_index.tolist()) == {0, 1, 2, 3}
    assert proposal.reads_lengths_only


def test_script_at_small_settings():
    """The script as a user runs it, at small settings: exit code 0, and its last line is the JSON
    summary (the full run is a line of .ci/run)."""
    command = [sys.executable, str(SCRIPT), "--chains", "1000", "--steps", "30", "--conservation-chains", "4000"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, report
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert set(summary["kernels"]) == {"late-half + restart", "draft revisions"}
    for name, entry in summary["kernels"].items():
        assert {"tv", "threshold", "ok"} <= set(entry)
        assert entry["ok"] and entry["tv"] < entry["threshold"], f"{name} failed its checks:\n{report}"
    assert set(summary["controls"]) == {"late-half alone (control)", "stale backward (control)"}
    for name, entry in summary["controls"].items():
        assert entry["rejected"] and not entry["ok"], f"the control {name} was not rejected:\n{report}"
    assert summary["controls"]["late-half alone (control)"]["conservation_p"] > 1e-4, "late-half cuts alone leave pi invariant"
    assert all(entry["drivers_identical"] for group in summary.values() for entry in group.values()), report
