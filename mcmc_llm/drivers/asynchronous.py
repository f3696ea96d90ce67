"""Algorithm 1 with asynchronous chains: continuous batching of extensions and proposals.

In the lock-step schedule (`power_sample` with `batching="lockstep"`) every chain takes its MH
step together, and a step lasts as long as the longest suffix any chain resamples: with uniform
cuts the batch is on average about half empty.  Here every chain runs its own copy of Algorithm 1
and the generation of all chains shares one `ContinuousBatch`.  A chain's program is

    for stage k:  extension (one request)  ->  N_MCMC x [ draw cut, one request, accept/reject ]

and the moment a chain's request finishes, the chain takes its next action and submits its next
request, which joins the batch in the very next decoding step.  The batch stays full until the
last chains run out of work.

Pre-fetching (`prefetch=True`): once chains run out of work, idle rows draw each chain's next
proposal for both outcomes of its MH step in flight (Brockwell 2006); why that is exact, and the
bookkeeping, are in `mcmc_llm.drivers.prefetch`.

The driver talks only to kernels: each stage's `SuffixMH` (`mcmc_llm.kernels.suffix_mh`) makes
a step's request with `plan` (the proposal's plan and, where exact, an early-rejection stop rule)
and takes the step with `finish` once the suffixes are back; the extension step is the driver's
own (`mcmc_llm.drivers.extension`); the acceptance pre-fetch is used only when the kernel says
`reads_lengths_only`.  Every generation request is a `Request` record (chain, action, pre-fetched
or not, its plan row, its result while it waits); requests go to one `ContinuousBatch` per
proposing LM (rows with different sampling rules and stop rules share it).  Pre-fetching is a
strategy object (`mcmc_llm.drivers.prefetch.Prefetcher`).

Exactness is untouched, and so are the draws: each chain applies exactly the lock-step kernels
(the same `plan` / `finish`, on the sub-batch of chains whose requests finished at that decoding
step, with rows of several `plan` calls batched by `proposals.plans`), and every draw comes from the chain's own stream with
the labels the lock-step driver uses (`mcmc_llm.drivers.power`), so a chain's draws are the same
whichever order chains are served in, and whether its proposal was pre-fetched or not.  The trace
has the lock-step layout: one draw per MH step, `(chain, stage * N_MCMC + step)`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mcmc_llm.core.protocols import PROPOSE, TOKENS, Sampler
from mcmc_llm.core.random import Streams
from mcmc_llm.core.recorder import TraceRecorder
from mcmc_llm.core.tree import gather_chains, scatter_chains
from mcmc_llm.drivers.extension import complete_extension, extension_request
from mcmc_llm.drivers.prefetch import Prefetcher
from mcmc_llm.drivers.requests import Request, rows_of
from mcmc_llm.kernels.mh import MHState
from mcmc_llm.kernels.suffix_mh import SuffixMH, SuffixRequest
from mcmc_llm.lm.early_stop import EarlyStop
from mcmc_llm.lm.generation import Continuation, ContinuousBatch, SamplingRule
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.plans import plan_rows
from mcmc_llm.proposals.suffix import rows_by_lm


class AsynchronousChains:
    """Algorithm 1 for every chain of `start`, chains asynchronous on continuously refilled batches
    (module docstring).  `kernels[k]` is stage k's `SuffixMH` kernel; `stage_caps[k]` its length
    cap; `streams` every chain's root stream; `recorder` receives the trace.  `rows`: the batch's
    row budget that pre-fetches may fill (default and minimum: one row per chain).  `run()` returns
    the final positions and the trace.  The common path is batched over chains; only chains with
    pre-fetched requests (the tail of a run) are handled one by one."""

    def __init__(
        self,
        proposer: LanguageModel,
        rule: SamplingRule,
        start: SequenceBatch,
        kernels: Sequence[SuffixMH],
        stage_caps: Sequence[int],
        mcmc_steps: int,
        streams: Streams,
        recorder: TraceRecorder,
        *,
        reference_lm: LanguageModel | None = None,
        prefetch: bool = True,
        early_reject: bool = True,
        rows: int | None = None,
        progress: bool = False,
    ):
        chains = start.num_chains
        if rows is not None and rows < chains:
            raise ValueError(f"rows must be at least the number of chains ({chains}), got {rows}")
        self.proposer, self.rule, self.kernels, self.stage_caps = proposer, rule, kernels, stage_caps
        self.mcmc_steps, self.streams, self.reference_lm = mcmc_steps, streams, reference_lm
        self.rows, self.chains, self.early_reject = rows or chains, chains, early_reject
        self.per_stage = mcmc_steps + 1  # actions per stage: the extension, then the MH steps
        self.actions = len(stage_caps) * self.per_stage
        self.device = start.tokens.device
        self.position = start
        self.log_target = torch.zeros(chains, dtype=torch.float64, device=self.device)
        self.action = torch.zeros(chains, dtype=torch.long)  # current action of every chain (CPU bookkeeping)
        self.current: list[Request | None] = [None] * chains  # every chain's current request
        self.recorder = recorder
        self.stage_of_draw = np.repeat(np.arange(len(stage_caps)), mcmc_steps)[None].repeat(chains, 0)
        self.extension_tokens = np.zeros((chains, len(stage_caps) * mcmc_steps), dtype=np.int64)
        self.engines: dict[int, ContinuousBatch] = {}  # id(lm) -> the batch its requests share
        self.extender = (Sampler(proposer, rule),)
        self.prefetcher = Prefetcher(self, [kernel.reads_lengths_only for kernel in kernels]) if prefetch else None
        self.bar = tqdm(total=chains * self.actions, desc="chains (asynchronous)", disable=not progress, leave=False)

    # ------------------------------------------------------------------ streams and engines
    def streams_of(self, chains: torch.Tensor, actions: torch.Tensor) -> Streams:
        """The streams of `actions[i]` of `chains[i]`: the extension of stage k from
        `root.split(k).split("extend")`, MH step j >= 1 from `root.split(k).split(j - 1)`."""
        stage_streams = self.streams.gather(chains).split(actions // self.per_stage)
        step = actions % self.per_stage
        if bool((step == 0).all()):
            return stage_streams.split("extend")
        if bool((step == 0).any()):
            raise ValueError("a group of requests mixes extensions and MH steps")
        return stage_streams.split(step - 1)

    @property
    def busy_rows(self) -> int:
        return sum(engine.rows for engine in self.engines.values())

    def drawn(self, request: Request) -> torch.Tensor | None:
        """Tokens drawn so far for a running request (None when queued, finished or unknown)."""
        return next((drawn for engine in self.engines.values() if (drawn := engine.drawn(request)) is not None), None)

    def cancel(self, requests: list[Request]) -> None:
        """Withdraw requests: running ones leave their batch, finished ones' tokens are discarded."""
        for engine in self.engines.values():
            engine.cancel([request for request in requests if request.result is None])
        for request in requests:
            if request.result is not None:
                batch, row = request.result
                self.proposer.counter.discard(int(batch.tokens.lengths[row]), rejected_early=bool(batch.stopped()[row]))
                request.result = None

    def _send(self, requests: list[Request], contexts: TokenBatch, budget: torch.Tensor, samplers: tuple,
              sampler_index: torch.Tensor, streams: Streams, stop: EarlyStop | None = None) -> None:
        """Submit requests to the engine of each row's sampler's LM (rows of one LM share a batch),
        each row stopped early by its `stop` rule (none by default)."""
        index = torch.as_tensor(sampler_index).cpu()
        for lm, rows in rows_by_lm(samplers, index):
            engine = self.engines.setdefault(id(lm), ContinuousBatch(lm, self.rule))
            sub = rows.to(contexts.ids.device)
            engine.submit([requests[r] for r in rows.tolist()], TokenBatch(contexts.ids[sub], contexts.lengths[sub]),
                          budget[rows.to(budget.device)], rules=[samplers[i].rule for i in index[rows].tolist()],
                          streams=streams.gather(rows), stop=None if stop is None else gather_chains(stop, rows))

    def send_planned(self, requests: list[Request], plan: SuffixRequest, contexts: TokenBatch) -> None:
        """Submit MH requests (rows of the kernel request `plan`), their suffixes drawn from their token streams."""
        chains = torch.as_tensor([request.chain for request in requests])
        actions = torch.as_tensor([request.action for request in requests])
        self._send(requests, contexts, plan.plan.max_new_tokens, plan.plan.samplers, plan.plan.sampler_index,
                   self.streams_of(chains, actions).split(PROPOSE).split(TOKENS), plan.stop)

    def plan_step(self, stage: int, chains: torch.Tensor, actions: torch.Tensor, position: SequenceBatch,
                  early_reject: bool = True) -> SuffixRequest:
        """Stage `stage`'s kernel request for `chains` at `position` (their states, or assumed ones),
        with a stop rule for every row (`EarlyStop.never` where none), so that the requests of several
        steps batch together (`proposals.plans.plan_rows`)."""
        state = MHState(position, self.log_target[chains.to(self.device)])
        request = self.kernels[stage].plan(self.streams_of(chains, actions), state, early_reject=early_reject and self.early_reject)
        if request.stop is None:
            request = request._replace(stop=EarlyStop.never(len(chains), request.plan.cut_index.device))
        return request

    # ------------------------------------------------------------------ the chains' program
    def submit(self, chains: torch.Tensor, actions: torch.Tensor, prefetched: bool) -> list[Request]:
        """Request action `actions[i]` of chain `chains[i]` from the chain's current position."""
        kinds = (actions // self.per_stage) * 2 + (actions % self.per_stage > 0)
        made = []
        for kind in torch.unique(kinds).tolist():
            k, is_mh = kind // 2, kind % 2 == 1
            mine = kinds == kind
            group, group_actions = chains[mine], actions[mine]
            sub = gather_chains(self.position, group.to(self.device))
            requests = [Request(chain, action, prefetched) for chain, action in zip(group.tolist(), group_actions.tolist())]
            if is_mh:
                plan = self.plan_step(k, group, group_actions, sub)
                for i, request in enumerate(requests):
                    request.plan = (plan, i)  # a plan's samplers stay with its own rows
                self.send_planned(requests, plan, sub.contexts(plan.plan.cut_index))
            else:
                contexts, budget = extension_request(sub, self.stage_caps[k])
                self._send(requests, contexts, budget, self.extender, torch.zeros(len(requests), dtype=torch.long),
                           self.streams_of(group, group_actions).split(TOKENS))
            if not prefetched:
                for request in requests:
                    self.current[request.chain] = request
            made += requests
        return made

    def _finish(self, requests: list[Request], results: Continuation) -> tuple[list[Request], torch.Tensor]:
        """Take the current action of every chain of `requests` (their current ones), finished with
        `results` (row i for requests[i]).  Returns the chains' next requests that have already
        finished (pre-fetched) and the chains that need a new request."""
        chains = torch.as_tensor([request.chain for request in requests])
        actions = self.action[chains]
        kinds = (actions // self.per_stage) * 2 + (actions % self.per_stage > 0)
        accepted = torch.ones(len(chains), dtype=torch.bool)
        work = []  # (stage, positions in `chains`, the kernel request of those rows or None for an extension)
        for kind in torch.unique(kinds).tolist():
            k, mine = kind // 2, (kinds == kind).nonzero().squeeze(-1)
            if kind % 2 == 0:
                work.append((k, mine, None))
                continue
            for plan, positions in plan_rows([requests[i].plan for i in mine.tolist()]):
                work.append((k, mine[positions], plan))
        for k, mine, plan in work:
            group = chains[mine]
            index = group.to(self.device)
            done = gather_chains(results, mine.to(self.device))
            sub = gather_chains(self.position, index)
            if plan is not None:
                new_state, info = self.kernels[k].finish(self.streams_of(group, actions[mine]), MHState(sub, self.log_target[index]), plan, done)
                draws = (k * self.mcmc_steps + actions[mine] % self.per_stage - 1).numpy()
                self.recorder.record(group.numpy(), draws, new_state, info)
                self.recorder.stat("prefetched", group.numpy(), draws, torch.as_tensor([requests[i].prefetched for i in mine.tolist()]))
                self.position = scatter_chains(self.position, index, new_state.position)
                self.log_target = scatter_chains(self.log_target, index, new_state.log_target)
                accepted[mine] = info.accepted.cpu()
            else:
                extended = complete_extension(self.proposer, self.rule, sub, done, self.reference_lm)
                if self.mcmc_steps:
                    self.extension_tokens[group.numpy(), k * self.mcmc_steps] = (extended.lengths - sub.lengths).cpu().numpy()
                    self.log_target = scatter_chains(self.log_target, index, self.kernels[k].init(extended).log_target)
                self.position = scatter_chains(self.position, index, extended)
        self.action[chains] += 1
        self.bar.update(len(chains))
        promoted = {} if self.prefetcher is None else self.prefetcher.decided(chains.tolist(), accepted.tolist(), (actions // self.per_stage).tolist())
        ready = [request for request in promoted.values() if request.result is not None]
        needy = chains[self.action[chains] < self.actions]
        if promoted:
            needy = needy[~torch.isin(needy, torch.as_tensor(list(promoted), dtype=torch.long))]
        return ready, needy

    # Hooks of the pre-fetching policy (deliberately wrong variants in the tests override them).
    def _branch(self, chain: int, accepted: bool):
        return self.prefetcher.branch(chain, accepted)

    def _keeps_acceptance_prefetch(self, chain: int, request: Request, accepted: bool, stage: int) -> bool:
        """An acceptance pre-fetch is kept only if the step was accepted and the chain's new state
        has the length its cut was drawn for (the stage cap)."""
        return accepted and int(self.position.lengths[chain]) == self.stage_caps[stage]

    def run(self) -> tuple[SequenceBatch, Any]:
        self.submit(torch.arange(self.chains), torch.zeros(self.chains, dtype=torch.long), prefetched=False)
        while any(engine.busy for engine in self.engines.values()):
            for engine in list(self.engines.values()):
                if engine.busy:
                    self._serve(*engine.step())
        self.bar.close()
        return self.position, self.recorder.trace(stage=self.stage_of_draw, extension_tokens=self.extension_tokens)

    def _serve(self, requests: list[Request], continuation: Continuation) -> None:
        """Take the actions of the chains whose requests just finished, then submit their next requests."""
        if not requests:
            return
        current = []
        for i, request in enumerate(requests):
            if self.current[request.chain] is request:
                current.append(i)
            else:
                request.result = (continuation, i)  # a pre-fetch done before the step it waits on
        ready, results, needy = [requests[i] for i in current], gather_chains(continuation, torch.as_tensor(current, dtype=torch.long, device=self.device)), []
        while ready:
            ready, more = self._finish(ready, results)
            needy.append(more)
            if ready:
                results = rows_of([request.result for request in ready])
                for request in ready:
                    request.result = None
        needy = torch.cat(needy) if needy else torch.zeros(0, dtype=torch.long)
        if len(needy):
            self.submit(needy, self.action[needy], prefetched=False)
        if self.prefetcher is not None:
            self.prefetcher.fill()


def run_asynchronous_chains(proposer, rule, start, kernels, stage_caps, mcmc_steps, streams, recorder, **options):
    """`AsynchronousChains(...).run()`: the final positions and the trace (None when `mcmc_steps` is 0)."""
    return AsynchronousChains(proposer, rule, start, kernels, stage_caps, mcmc_steps, streams, recorder, **options).run()
