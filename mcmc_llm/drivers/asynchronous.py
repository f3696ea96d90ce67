"""Algorithm 1 with asynchronous chains: continuous batching of extensions and proposals.

In the lock-step schedule (`power_sample` with `batching="lockstep"`) every chain takes its MH
step together, and a step lasts as long as the longest suffix any chain resamples: with uniform
cuts the batch is on average about half empty.  Here every chain runs its own copy of Algorithm 1
and the generation of all chains shares one `ContinuousBatch`.  A chain's program is

    for stage k:  extension (one request)  ->  N_MCMC x [ draw cut, one request, accept/reject ]

and the moment a chain's request finishes, the chain takes its next action and submits its next
request, which joins the batch in the very next decoding step.  The batch stays full until the
last chains run out of work.

Pre-fetching (`prefetch=True`).  Once chains run out of work, rows fall idle while the busiest
chains finish.  Those rows pre-fetch (Brockwell 2006) both branches of a chain's MH step j, in
flight from state x with cut m:

* the all-reject path: MH steps j+1, j+2, ... of the stage, then the next stage's extension, all
  from x.  When step j is rejected the chain stays at x and the pre-fetched request, already under
  way or done, becomes step j+1's; when it is accepted every request pre-fetched from x is
  withdrawn.  Exact: the pre-fetch for step j+1 is a draw from q(. | x) with its own randomness,
  independent of step j's proposal and uniform, so given a rejection it has exactly the law of a
  proposal drawn afterwards.
* the acceptance: step j+1 from x', for cut rules whose law reads only the length (uniform,
  within-block, restart).  If step j's proposal draws no EOS, x' has the stage cap's length, so
  step j+1's cut m' is drawn now from the law for that length; its context is x_<m' when m' <= m,
  else x_<m and the proposal's first m' - m tokens, and it is submitted once those are drawn.  It
  is kept only if step j is accepted and x' has the assumed length, an event of step j alone, so
  given it the pre-fetch has step j+1's exact law; otherwise it is withdrawn.
Pre-fetches only take rows no chain's current request needs (the batch never exceeds `rows`, by
default one per chain); their tokens count in `tokens_sampled` when used and in
`tokens_discarded` otherwise.  The trace's `prefetched` stat marks the steps whose proposal was
pre-fetched.

The driver talks to proposals only through the two-phase `SuffixProposal` protocol
(`mcmc_llm.core.protocols`): `plan`, then a generation request per chain (keep x_<cut_index, draw
at most `max_new_tokens` tokens with the chain's `Sampler`), then `complete`; the acceptance
pre-fetch is used only when the proposal says `reads_lengths_only`.  Requests go to one
`ContinuousBatch` per proposing LM; rows with different sampling rules share it.

Exactness is untouched, and so are the draws: each chain applies exactly the lock-step kernels
(the same `plan` / `complete` and `MetropolisHastings.decide`, on the sub-batch of chains whose
requests finished at that decoding step), and every draw comes from the chain's own stream with
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
from mcmc_llm.kernels.mh import MHState
from mcmc_llm.kernels.suffix_mh import SuffixMH, SuffixRequest
from mcmc_llm.lm.early_stop import EarlyStop
from mcmc_llm.lm.generation import Continuation, ContinuousBatch, SamplingRule
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.drivers.prefetch import Prefetching, _rows
from mcmc_llm.proposals.plans import plan_rows
from mcmc_llm.proposals.suffix import complete_extension, extension_request, rows_by_lm


class AsynchronousChains(Prefetching):
    """Algorithm 1 for every chain of `start`, chains asynchronous on continuously refilled batches
    (module docstring).  `kernels[k]` is stage k's MH kernel (its proposal a `SuffixProposal`);
    `stage_caps[k]` its length cap; `streams` every chain's root stream; `recorder` receives the
    trace.  `rows`: the batch's row budget that pre-fetches may fill (default and minimum: one row
    per chain).  `run()` returns the final positions and the trace.

    A request's key is `action * chains + chain`, where `action = stage * (N_MCMC + 1) + step` (step
    0: the extension, j >= 1: MH step j).  The common path is batched over chains; only chains with
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
        self.prefetch, self.rows, self.chains = prefetch, rows or chains, chains
        self.early_reject = early_reject
        self.per_stage = mcmc_steps + 1  # actions per stage: the extension, then the MH steps
        self.actions = len(stage_caps) * self.per_stage
        self.device = start.tokens.device
        self.position = start
        self.log_target = torch.zeros(chains, dtype=torch.float64, device=self.device)
        self.current_plans: list[tuple[SuffixRequest, int] | None] = [None] * chains  # chain -> (request, row) of its current MH step
        self.action = torch.zeros(chains, dtype=torch.long)  # current action of every chain (CPU bookkeeping)
        self.ahead: dict[int, list[int]] = {}  # chain -> keys pre-fetched after its current request, in order
        self.queued = torch.zeros(chains, dtype=torch.long)  # len(ahead[chain])
        self.from_prefetch = torch.zeros(chains, dtype=torch.bool)  # the current request was pre-fetched
        self.current_key = torch.arange(chains)  # engine key of every chain's current request
        self.accept_ahead: dict[int, int] = {}  # chain -> key of its next MH step pre-fetched for an acceptance
        self.deferred: dict[int, tuple[int, int, int]] = {}  # such keys whose context is still being generated: (chain, cut, budget)
        self.length_only = torch.as_tensor([kernel.reads_lengths_only for kernel in kernels], dtype=torch.bool)
        self.prefetch_plans: dict[int, tuple[Any, int]] = {}  # key -> (plans of its submission, row)
        self.held: dict[int, tuple[Continuation, int]] = {}  # key -> finished pre-fetch, (batch, row)
        self.recorder = recorder
        self.stage_of_draw = np.repeat(np.arange(len(stage_caps)), mcmc_steps)[None].repeat(chains, 0)
        self.extension_tokens = np.zeros((chains, len(stage_caps) * mcmc_steps), dtype=np.int64)
        self.engines: dict[int, ContinuousBatch] = {}  # id(lm) -> the batch its requests share
        self.extender = (Sampler(proposer, rule),)
        self.bar = tqdm(total=chains * self.actions, desc="chains (asynchronous)", disable=not progress, leave=False)

    # ------------------------------------------------------------------ streams, plans, engines
    def _streams(self, chains: torch.Tensor, actions: torch.Tensor) -> Streams:
        """The streams of `actions[i]` of `chains[i]`: the extension of stage k from
        `root.split(k).split("extend")`, MH step j >= 1 from `root.split(k).split(j - 1)`."""
        stage_streams = self.streams.gather(chains).split(actions // self.per_stage)
        step = actions % self.per_stage
        if bool((step == 0).all()):
            return stage_streams.split("extend")
        if bool((step == 0).any()):
            raise ValueError("a group of requests mixes extensions and MH steps")
        return stage_streams.split(step - 1)

    @staticmethod
    def _request(request: SuffixRequest) -> SuffixRequest:
        """`request` with a stop rule for every row (`EarlyStop.never` for none), so that requests of
        several steps batch together (`proposals.plans.plan_rows`)."""
        if request.stop is not None:
            return request
        return request._replace(stop=EarlyStop.never(len(request.plan.cut_index), request.plan.cut_index.device))

    def _current_cut(self, chain: int) -> int:
        """The cut index of `chain`'s current MH request."""
        request, row = self.current_plans[chain]
        return int(request.plan.cut_index[row])

    def _send(self, keys: list[int], contexts: TokenBatch, budget: torch.Tensor, samplers: tuple, sampler_index: torch.Tensor,
              streams: Streams, stop: EarlyStop | None = None) -> None:
        """Submit requests to the engine of each row's sampler's LM (rows of one LM share a batch),
        each row stopped early by its `stop` rule (none by default)."""
        index = torch.as_tensor(sampler_index).cpu()
        for lm, rows in rows_by_lm(samplers, index):
            engine = self.engines.setdefault(id(lm), ContinuousBatch(lm, self.rule))
            sub = rows.to(contexts.ids.device)
            engine.submit([keys[r] for r in rows.tolist()], TokenBatch(contexts.ids[sub], contexts.lengths[sub]),
                          budget[rows.to(budget.device)], rules=[samplers[i].rule for i in index[rows].tolist()],
                          streams=streams.gather(rows), stop=None if stop is None else gather_chains(stop, rows))

    def _submit_planned(self, keys: list[int], chains: torch.Tensor, request: SuffixRequest, contexts: TokenBatch) -> None:
        """Submit MH requests of `chains` (rows of `request`), their suffixes drawn from their token streams."""
        actions = torch.as_tensor([key // self.chains for key in (k if k >= 0 else -k - 1 for k in keys)])
        plan = request.plan
        self._send(keys, contexts, plan.max_new_tokens, plan.samplers, plan.sampler_index,
                   self._streams(chains, actions).split(PROPOSE).split(TOKENS), request.stop)

    @property
    def _busy_rows(self) -> int:
        return sum(engine.rows for engine in self.engines.values())

    def _drawn(self, key: int) -> torch.Tensor | None:
        for engine in self.engines.values():
            drawn = engine.drawn(key)
            if drawn is not None:
                return drawn
        return None

    # ------------------------------------------------------------------ requests
    def _decode(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(chain, action) of engine keys: `action * chains + chain`, or `-(that) - 1` for a request
        pre-fetched for an acceptance."""
        raw = torch.where(keys >= 0, keys, -keys - 1)
        return raw % self.chains, raw // self.chains

    def _submit(self, chains: torch.Tensor, actions: torch.Tensor, prefetched: bool) -> None:
        """Request action `actions[i]` of chain `chains[i]` from the chain's current position."""
        kinds = (actions // self.per_stage) * 2 + (actions % self.per_stage > 0)
        for kind in torch.unique(kinds).tolist():
            k, is_mh = kind // 2, kind % 2 == 1
            mine = kinds == kind
            group, keys = chains[mine], (actions[mine] * self.chains + chains[mine]).tolist()
            index = group.to(self.device)
            sub = gather_chains(self.position, index)
            streams = self._streams(group, actions[mine])
            if is_mh:
                request = self._request(self.kernels[k].plan(streams, MHState(sub, self.log_target[index]), early_reject=self.early_reject))
                if prefetched:
                    self.prefetch_plans.update({key: (request, i) for i, key in enumerate(keys)})
                else:
                    for i, chain in enumerate(group.tolist()):
                        self.current_plans[chain] = (request, i)  # a plan's samplers stay with its own rows
            if prefetched:
                for chain, key in zip(group.tolist(), keys):
                    self.ahead.setdefault(chain, []).append(key)
                self.queued[group] += 1
            else:
                self.from_prefetch[group] = False
                self.current_key[group] = torch.as_tensor(keys)
            if is_mh:
                self._submit_planned(keys, group, request, sub.contexts(request.plan.cut_index))
            else:
                contexts, budget = extension_request(sub, self.stage_caps[k])
                self._send(keys, contexts, budget, self.extender, torch.zeros(len(keys), dtype=torch.long), streams.split(TOKENS))

    def _finish(self, chains: torch.Tensor, results: Continuation) -> tuple[torch.Tensor, torch.Tensor]:
        """Take the current action of every chain in `chains`, whose request finished with
        `results` (row i for chains[i]).  Returns the chains whose next request has already
        finished (pre-fetched) and the chains that need a new request."""
        actions = self.action[chains]
        kinds = (actions // self.per_stage) * 2 + (actions % self.per_stage > 0)
        accepted = torch.ones(len(chains), dtype=torch.bool)
        work = []  # (stage, is an MH step, positions in `chains`, the request of those rows or None)
        for kind in torch.unique(kinds).tolist():
            k, is_mh, mine = kind // 2, kind % 2 == 1, (kinds == kind).nonzero().squeeze(-1)
            if not is_mh:
                work.append((k, False, mine, None))
                continue
            for request, positions in plan_rows([self.current_plans[c] for c in chains[mine].tolist()]):
                work.append((k, True, mine[positions], request))
        for k, is_mh, mine, request in work:
            group = chains[mine]
            index = group.to(self.device)
            done = gather_chains(results, mine.to(self.device))
            sub = gather_chains(self.position, index)
            if is_mh:
                kernel = self.kernels[k]
                streams = self._streams(group, actions[mine])
                new_state, info = kernel.finish(streams, MHState(sub, self.log_target[index]), request, done)
                draws = (k * self.mcmc_steps + actions[mine] % self.per_stage - 1).numpy()
                self.recorder.record(group.numpy(), draws, new_state, info)
                self.recorder.stat("prefetched", group.numpy(), draws, self.from_prefetch[group])
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
        promoted, withdrawn = {}, []
        for i in (self.queued[chains] > 0).nonzero().squeeze(-1).tolist():
            key, dropped = self._branch(int(chains[i]), bool(accepted[i]))
            withdrawn += dropped
            if key is not None:
                promoted[int(chains[i])] = key
        for i, chain in enumerate(chains.tolist() if self.accept_ahead else ()):
            if chain in self.accept_ahead:
                key = self.accept_ahead.pop(chain)
                if self._keeps_acceptance_prefetch(chain, key, bool(accepted[i]), int(actions[i]) // self.per_stage):
                    promoted[chain] = key
                elif key in self.deferred:
                    del self.deferred[key]
                    self.prefetch_plans.pop(key)
                else:
                    withdrawn.append(key)
        if withdrawn:
            self._withdraw(withdrawn)
        self._promote(promoted)
        ready = [chain for chain, key in promoted.items() if key in self.held]
        needy = chains[self.action[chains] < self.actions]
        if promoted:
            needy = needy[~torch.isin(needy, torch.as_tensor(list(promoted), dtype=torch.long))]
        return torch.as_tensor(ready, dtype=torch.long), needy

    def run(self) -> tuple[SequenceBatch, Any]:
        self._submit(torch.arange(self.chains), torch.zeros(self.chains, dtype=torch.long), prefetched=False)
        while any(engine.busy for engine in self.engines.values()):
            for engine in list(self.engines.values()):
                if engine.busy:
                    self._serve(*engine.step())
        self.bar.close()
        return self.position, self.recorder.trace(stage=self.stage_of_draw, extension_tokens=self.extension_tokens)

    def _serve(self, keys: list, continuation: Continuation) -> None:
        """Take the actions of the chains whose requests just finished, then submit their next requests."""
        if not keys:
            return
        keys = torch.as_tensor(keys, dtype=torch.long)
        chains, _ = self._decode(keys)
        is_current = keys == self.current_key[chains]
        current = is_current.nonzero().squeeze(-1)
        for i in (~is_current).nonzero().squeeze(-1).tolist():
            self.held[int(keys[i])] = (continuation, i)  # a pre-fetch done before the step it waits on
        ready, results, needy = chains[current], gather_chains(continuation, current.to(self.device)), []
        while len(ready):
            ready, more = self._finish(ready, results)
            needy.append(more)
            if len(ready):
                results = _rows([self.held.pop(int(self.current_key[c])) for c in ready])
        needy = torch.cat(needy) if needy else torch.zeros(0, dtype=torch.long)
        if len(needy):
            self._submit(needy, self.action[needy], prefetched=False)
        if self.prefetch:
            self._submit_acceptances()
            self._fill_idle_rows()


def run_asynchronous_chains(proposer, rule, start, kernels, stage_caps, mcmc_steps, streams, recorder, **options):
    """`AsynchronousChains(...).run()`: the final positions and the trace (None when `mcmc_steps` is 0)."""
    return AsynchronousChains(proposer, rule, start, kernels, stage_caps, mcmc_steps, streams, recorder, **options).run()
