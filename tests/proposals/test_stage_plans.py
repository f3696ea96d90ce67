"""Stage-dependent and per-call suffix plans in every driver (issue: pre-fetched plans took another
stage's sampler).

Three documented kinds of user proposal, each run in lock-step and in continuous batching at 1 and
at 3 rows per chain (3 rows: deep pre-fetching of both branches from the first MH step on):

* `stage_temperature`: the temperature schedule of `docs/howto_custom_kernels.md`, 1.0 at even
  stages and 0.25 at odd ones;
* `stage_lm`: the proposal LM switches by stage (the target's own model, then a second LM);
* `per_call_samplers`: a plan that builds its `samplers` per call, one per row
  (`samplers=(s,) * C`, `sampler_index=arange(C)`), whose `complete` checks that it got exactly
  the plan rows of its own chains.

Each must give bit-identical chains in the three drivers (per-chain streams: the same draws, so any
difference is a step that drew its suffix with another plan's sampler), and its final states must
follow the exact finite-N law of Algorithm 1 with that schedule (`chain_law(stage_proposals=...)`,
chi-square at false-failure rate 1e-4, seeded).  The companions put back the old merge (rows of
several plans concatenated keeping the first plan's samplers) and show the same checks failing.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mcmc_llm.core.protocols import Sampler
from mcmc_llm.diagnostics.chain_law import chain_law
from mcmc_llm.drivers import asynchronous, prefetch, requests
from mcmc_llm.drivers import power as schedule
from mcmc_llm.drivers.asynchronous import AsynchronousChains
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.toy import NgramLM, load_toy
from mcmc_llm.proposals.plans import PlansDiffer, concat_plans, gather_plan, plan_rows
from mcmc_llm.proposals.suffix import CutPlan, SuffixResampling
from mcmc_llm.testing import chi_square_check, counts_from_samples
from tests.power_helpers import FALSE_FAILURE_RATE, TV_RESOLUTION, chains_to_detect

N, ALPHA, BLOCK, STEPS = 5, 3.0, 1, 2  # five stages: many plans of different stages in flight at once
LM = load_toy("trigram")
SECOND_LM = NgramLM.random(4, 3, seed=7, eos_logit=-1.0)  # the same vocabulary, another law
TEMPERATURES = (1.0, 0.25)
DRIVERS = (("lockstep", 1), ("continuous", 1), ("continuous", 3))


class PerCallSamplers(SuffixResampling):
    """A plan with one sampler per row, built per call; `complete` insists on its own rows' samplers."""

    def plan(self, source, position):
        plan = super().plan(source, position)
        chains = position.num_chains
        return dataclasses.replace(plan, samplers=(self.sampler,) * chains, sampler_index=torch.arange(chains))

    def complete(self, position, plan, continuation):
        assert len(plan.samplers) == position.num_chains, (
            f"complete() got a plan with {len(plan.samplers)} samplers for {position.num_chains} chains")
        assert all(plan.samplers[int(i)] is self.sampler for i in plan.sampler_index), "a row names another plan's sampler"
        return super().complete(position, plan, continuation)


def _schedule(name):
    """`(proposal factory, the stage proposals' (LM, temperature) for chain_law)` of a schedule."""
    stages = PowerSamplerConfig(alpha=ALPHA, block_size=BLOCK, max_new_tokens=N).num_stages
    if name == "stage_temperature":
        laws = [(LM, TEMPERATURES[k % 2]) for k in range(stages)]
        return (lambda st: SuffixResampling(LM, SamplingRule(TEMPERATURES[st.index % 2]), "uniform", st.cap,
                                            block_start=st.block_start)), laws
    if name == "stage_lm":
        lms = (LM, SECOND_LM)
        laws = [(lms[k % 2], 0.5) for k in range(stages)]
        return (lambda st: SuffixResampling(lms[st.index % 2], SamplingRule(0.5), "uniform", st.cap,
                                            block_start=st.block_start, reference_lm=LM)), laws
    laws = [(LM, 0.5)] * stages
    return (lambda st: PerCallSamplers(LM, SamplingRule(0.5), "uniform", st.cap, block_start=st.block_start)), laws


SCHEDULES = ("stage_temperature", "stage_lm", "per_call_samplers")


def _rows_per_chain(monkeypatch, rows_per_chain):
    def run(proposer, rule, start, *args, **options):
        return AsynchronousChains(proposer, rule, start, *args, rows=rows_per_chain * start.num_chains, **options).run()

    monkeypatch.setattr(schedule, "run_asynchronous_chains", run)


def _final(monkeypatch, name, batching, rows_per_chain, chains, seed=11):
    _rows_per_chain(monkeypatch, rows_per_chain)
    factory, _ = _schedule(name)
    config = PowerSamplerConfig(alpha=ALPHA, block_size=BLOCK, max_new_tokens=N, mcmc_steps=STEPS, batching=batching)
    return [tuple(s) for s in power_sample(LM, [[]], config, chains_per_prompt=chains, seed=seed, proposal=factory).sequences()]


def _law(name):
    _, laws = _schedule(name)
    return chain_law(LM, alpha=ALPHA, block_size=BLOCK, max_new_tokens=N, mcmc_steps=STEPS, stage_proposals=laws)


def _first_plan_samplers(parts):
    """The old merge, deliberately wrong: rows of several plans as one, keeping the first plan's samplers."""
    return [(requests.rows_of(parts), list(range(len(parts))))]  # gather per batch, then `concat_chains`


@pytest.mark.parametrize("name", SCHEDULES)
def test_stage_and_per_call_plans_give_identical_chains_in_every_driver(monkeypatch, name):
    """5,000 chains per driver (the old merge changed 22 of them at 3 rows per chain)."""
    finals = {driver: _final(monkeypatch, name, *driver, chains=5000) for driver in DRIVERS}
    reference = finals[DRIVERS[0]]
    for driver, final in finals.items():
        differing = sum(a != b for a, b in zip(reference, final))
        assert differing == 0, f"{name}: {differing} of {len(final)} chains differ between lock-step and {driver}"


@pytest.mark.slow  # about 1 min: the law of each schedule, at the chains that detect TV 0.02
@pytest.mark.parametrize("name", SCHEDULES)
def test_stage_and_per_call_plans_reach_their_exact_finite_n_law(monkeypatch, name):
    law = _law(name)
    support = sorted(law)
    chains = chains_to_detect([law[s] for s in support])
    final = _final(monkeypatch, name, "continuous", 3, chains=chains)
    check = chi_square_check(counts_from_samples(final, support), [law[s] for s in support], FALSE_FAILURE_RATE)
    assert check.passed and check.min_detectable_tv <= TV_RESOLUTION, check.message


def test_the_old_merge_is_caught(monkeypatch):
    """Companion: with the first plan's samplers kept for merged rows, the stage schedule's chains differ
    from lock-step and the per-call proposal is handed another call's samplers."""
    lockstep = _final(monkeypatch, "stage_temperature", "lockstep", 1, chains=5000)
    monkeypatch.setattr(asynchronous, "plan_rows", _first_plan_samplers)
    monkeypatch.setattr(prefetch, "plan_rows", _first_plan_samplers)
    merged = _final(monkeypatch, "stage_temperature", "continuous", 3, chains=5000)
    assert sum(a != b for a, b in zip(lockstep, merged)) > 0, "the old merge should change some chains"
    with pytest.raises(AssertionError, match="samplers for|another plan's sampler"):
        _final(monkeypatch, "per_call_samplers", "continuous", 1, chains=2000)


def test_plan_rows_keep_their_own_samplers():
    """The primitives: rows of two plans with different samplers keep theirs through concat and gather;
    plans that differ in another non-tensor field are not merged."""
    a, b = SamplingRule(1.0), SamplingRule(0.25)

    def plan(rule, chains, start):
        index = torch.arange(start, start + chains)
        return CutPlan(index, index, torch.zeros(chains, dtype=torch.long), (Sampler(LM, rule),),
                       torch.zeros(chains, 3), torch.ones(chains, dtype=torch.bool))

    first, second = plan(a, 2, 0), plan(b, 3, 2)
    with pytest.raises(PlansDiffer):  # different tuples: never joined (indices would change)
        concat_plans([first, second])
    groups = plan_rows([(second, 2), (first, 0), (second, 0)])  # kept apart, each row with its own sampler
    assert sorted(positions for _, positions in groups) == [[0, 2], [1]]
    for group, positions in groups:
        assert [group.samplers[int(i)].rule for i in group.sampler_index] == [[b, a, b][p] for p in positions]
        assert group.cut_index.tolist() == [[4, 0, 2][p] for p in positions]
    shared = concat_plans([plan(a, 2, 0), plan(a, 1, 2)])  # equal tuples: kept, indices unchanged
    assert len(shared.samplers) == 1 and shared.sampler_index.tolist() == [0, 0, 0]
    sampler = Sampler(LM, a)
    per_row = dataclasses.replace(plan(a, 4, 0), samplers=(sampler,) * 4, sampler_index=torch.arange(4))  # built per call
    rows = gather_plan(per_row, torch.as_tensor([3, 1]))
    assert rows.samplers == (sampler,) * 2 and rows.sampler_index.tolist() == [0, 1]
    both = concat_plans([rows, dataclasses.replace(plan(a, 3, 0), samplers=(sampler,) * 3, sampler_index=torch.arange(3))])
    assert both.samplers == (sampler,) * 5 and both.sampler_index.tolist() == [0, 1, 2, 3, 4]
    # A proposal's own tuple of distinct samplers keeps its indices (they may mean something: "drafted")
    own = dataclasses.replace(plan(a, 2, 0), samplers=(Sampler(LM, a), Sampler(SECOND_LM, b)), sampler_index=torch.arange(2))
    drafted = gather_plan(own, torch.as_tensor([1]))
    assert drafted.samplers == own.samplers and drafted.sampler_index.tolist() == [1]
