"""Algorithm 1 with asynchronous chains: continuous batching of extensions and proposals.

In the lock-step schedule (`power_sample` with `batching="lockstep"`) every chain takes its MH
step together, and a step lasts as long as the longest suffix any chain resamples: with uniform
cuts the batch is on average about half empty.  Here every chain runs its own copy of Algorithm 1
and the generation of all chains shares one `ContinuousBatch`.  A chain's program is

    for stage k:  extension (one request)  ->  N_MCMC x [ draw cut, one request, accept/reject ]

and the moment a chain's request finishes, the chain takes its next action and submits its next
request, which joins the batch in the very next decoding step.  The batch stays full until the
last chains run out of work.

Exactness is untouched: each chain applies exactly the lock-step kernels (the same
`SuffixResampling.plan` / `complete` and `MetropolisHastings.decide`, on the sub-batch of chains
whose requests finished at that decoding step), only the order in which chains consume the shared
random stream differs.  Runs are deterministic given the seed.  The trace has the lock-step layout:
one draw per MH step, `(chain, stage * N_MCMC + step)`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mcmc_llm.core.mh import MetropolisHastings, MHState
from mcmc_llm.core.trace import Trace
from mcmc_llm.core.tree import flatten_info, gather_chains, scatter_chains
from mcmc_llm.lm.generation import Continuation, ContinuousBatch, SamplingRule
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.power.sequences import SequenceBatch
from mcmc_llm.power.suffix import SuffixPlan, complete_extension, extension_request


class _Recorder:
    """Per-chain records of every MH step, written as steps complete, in (chain, draw) arrays."""

    def __init__(self, chains: int, draws: int, functionals: dict[str, Any]):
        self.chains, self.draws, self.functionals = chains, draws, functionals
        self.samples: dict[str, np.ndarray] = {}
        self.stats: dict[str, np.ndarray] = {}

    def _write(self, group: dict[str, np.ndarray], name: str, chains: np.ndarray, draws: np.ndarray, value: torch.Tensor):
        value = value.detach().cpu()
        array = value.to(torch.float64).numpy() if value.is_floating_point() else value.numpy()
        if name not in group:
            group[name] = np.zeros((self.chains, self.draws) + array.shape[1:], dtype=array.dtype)
        group[name][chains, draws] = array

    def step(self, chains, draws, state: MHState, info) -> None:
        for name, functional in self.functionals.items():
            self._write(self.samples, name, chains, draws, torch.as_tensor(functional(state.position)))
        self._write(self.samples, "log_target", chains, draws, state.log_target)
        for name, value in flatten_info(info).items():
            self._write(self.stats, name, chains, draws, value)

    def trace(self, stage: np.ndarray, extension_tokens: np.ndarray) -> Trace | None:
        if self.draws == 0:
            return None
        return Trace(samples=self.samples, stats={**self.stats, "stage": stage, "extension_tokens": extension_tokens})


def run_asynchronous_chains(
    proposer: LanguageModel,
    rule: SamplingRule,
    start: SequenceBatch,
    kernels: Sequence[MetropolisHastings],
    stage_caps: Sequence[int],
    mcmc_steps: int,
    generator: torch.Generator,
    *,
    reference_lm: LanguageModel | None = None,
    functionals: dict[str, Any],
    progress: bool = False,
) -> tuple[SequenceBatch, Trace | None]:
    """Run every chain of `start` through all stages (extension, then `mcmc_steps` MH steps of
    `kernels[k]`, whose proposals must be `SuffixResampling`), chains asynchronous.

    Returns the final positions and the trace (None when `mcmc_steps` is 0)."""
    chains, stages = start.num_chains, len(stage_caps)
    device = start.tokens.device
    position = start
    log_target = torch.zeros(chains, dtype=torch.float64, device=device)
    plans = SuffixPlan(  # the in-flight proposal of every chain (rows of chains extending are stale)
        cut_index=torch.zeros(chains, dtype=torch.long, device=device),
        log_cut=torch.zeros(chains, start.capacity, dtype=torch.float64, device=device),
        movable=torch.zeros(chains, dtype=torch.bool, device=device),
        budget=torch.zeros(chains, dtype=torch.long, device=device),
    )
    stage = torch.zeros(chains, dtype=torch.long)  # on the CPU: schedule bookkeeping only
    step = torch.zeros(chains, dtype=torch.long)  # 0: extension in flight; j >= 1: MH step j in flight
    recorder = _Recorder(chains, stages * mcmc_steps, functionals)
    stage_of_draw = np.repeat(np.arange(stages), mcmc_steps)[None].repeat(chains, 0)
    extension_tokens = np.zeros((chains, stages * mcmc_steps), dtype=np.int64)
    engine = ContinuousBatch(proposer, rule, generator)
    bar = tqdm(total=chains * stages * (mcmc_steps + 1), desc="chains (asynchronous)", disable=not progress, leave=False)

    def groups(rows: torch.Tensor):
        """`rows` split by (stage, extension or MH step), in a fixed order."""
        keys = stage[rows] * 2 + (step[rows] > 0)
        for key in torch.unique(keys).tolist():
            yield key // 2, key % 2 == 1, rows[keys == key]

    def submit(rows: torch.Tensor) -> None:
        nonlocal plans
        for k, is_mh, group in groups(rows):
            index = group.to(device)
            sub = gather_chains(position, index)
            if is_mh:
                plan = kernels[k].proposal.plan(generator, sub)
                plans = scatter_chains(plans, index, plan)
                engine.submit(group.tolist(), plan.contexts(sub), plan.budget)
            else:
                contexts, budget = extension_request(sub, stage_caps[k])
                engine.submit(group.tolist(), contexts, budget)

    def finish(rows: torch.Tensor, continuation: Continuation) -> None:
        nonlocal position, log_target
        order = {chain: i for i, chain in enumerate(rows.tolist())}
        for k, is_mh, group in groups(rows):
            index = group.to(device)
            mine = gather_chains(continuation, torch.as_tensor([order[c] for c in group.tolist()], device=device))
            sub = gather_chains(position, index)
            if is_mh:
                kernel = kernels[k]
                current = MHState(sub, log_target[index])
                move = kernel.proposal.complete(sub, gather_chains(plans, index), mine)
                new_state, info = kernel.decide(generator, current, move)
                draws = (k * mcmc_steps + step[group] - 1).numpy()
                recorder.step(group.numpy(), draws, new_state, info)
                position = scatter_chains(position, index, new_state.position)
                log_target = scatter_chains(log_target, index, new_state.log_target)
            else:
                extended = complete_extension(proposer, rule, sub, mine, reference_lm)
                if mcmc_steps:
                    extension_tokens[group.numpy(), k * mcmc_steps] = (extended.lengths - sub.lengths).cpu().numpy()
                    log_target = scatter_chains(log_target, index, kernels[k].init(extended).log_target)
                position = scatter_chains(position, index, extended)
        step[rows] += 1
        next_stage = step[rows] > mcmc_steps
        stage[rows] += next_stage.long()
        step[rows] = torch.where(next_stage, 0, step[rows])
        bar.update(len(rows))

    submit(torch.arange(chains))
    while engine.busy:
        keys, continuation = engine.step()
        if not keys:
            continue
        rows = torch.as_tensor(keys, dtype=torch.long)
        finish(rows, continuation)
        active = rows[stage[rows] < stages]
        if len(active):
            submit(active)
    bar.close()
    return position, recorder.trace(stage_of_draw, extension_tokens)

