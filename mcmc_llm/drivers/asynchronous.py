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

Exactness is untouched: each chain applies exactly the lock-step kernels (the same
`SuffixResampling.plan` / `complete` and `MetropolisHastings.decide`, on the sub-batch of chains
whose requests finished at that decoding step), only the order in which chains consume the shared
random stream differs.  Runs are deterministic given the seed.  The trace has the lock-step layout:
one draw per MH step, `(chain, stage * N_MCMC + step)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mcmc_llm.kernels.mh import MetropolisHastings, MHState
from mcmc_llm.core.trace import Trace
from mcmc_llm.core.tree import concat_chains, flatten_info, gather_chains, map_tensors, scatter_chains
from mcmc_llm.lm.generation import Continuation, ContinuousBatch, SamplingRule
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.suffix import SuffixPlan, complete_extension, extension_request


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

    def stat(self, name: str, chains, draws, value: torch.Tensor) -> None:
        self._write(self.stats, name, chains, draws, value)

    def trace(self, stage: np.ndarray, extension_tokens: np.ndarray) -> Trace | None:
        if self.draws == 0:
            return None
        return Trace(samples=self.samples, stats={**self.stats, "stage": stage, "extension_tokens": extension_tokens})


def _rows(parts: list[tuple[Any, int]]) -> Any:
    """Rows `(batch, row)` of several chain-batched trees as one batch, in order (one gather per
    batch; 2-D leaves, such as a continuation's per-token records, right-padded to one width)."""
    sources: dict[int, list[int]] = {}
    for i, (batch, _) in enumerate(parts):
        sources.setdefault(id(batch), []).append(i)
    pieces, order = [], []
    for positions in sources.values():
        batch = parts[positions[0]][0]
        pieces.append(gather_chains(batch, torch.as_tensor([parts[i][1] for i in positions])))
        order += positions
    width = max((leaf.shape[1] for piece in pieces for leaf in _leaves(piece) if leaf.dim() == 2), default=0)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1])) if t.dim() == 2 else t  # noqa: E731
    stacked = concat_chains([map_tensors(pad, piece) for piece in pieces])
    return gather_chains(stacked, torch.argsort(torch.as_tensor(order)))


def _leaves(tree: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_tensors(found.append, tree)
    return found


class AsynchronousChains:
    """Algorithm 1 for every chain of `start`, chains asynchronous on one `ContinuousBatch` (module
    docstring).  `kernels[k]` is stage k's MH kernel (its proposal a `SuffixResampling`);
    `stage_caps[k]` its length cap.  `rows`: the batch's row budget that pre-fetches may fill
    (default and minimum: one row per chain).  `run()` returns the final positions and the trace.

    A request's key is `action * chains + chain`, where `action = stage * (N_MCMC + 1) + step` (step
    0: the extension, j >= 1: MH step j).  The common path is batched over chains; only chains with
    pre-fetched requests (the tail of a run) are handled one by one."""

    def __init__(
        self,
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
        prefetch: bool = True,
        rows: int | None = None,
        progress: bool = False,
    ):
        chains = start.num_chains
        if rows is not None and rows < chains:
            raise ValueError(f"rows must be at least the number of chains ({chains}), got {rows}")
        self.proposer, self.rule, self.kernels, self.stage_caps = proposer, rule, kernels, stage_caps
        self.mcmc_steps, self.generator, self.reference_lm = mcmc_steps, generator, reference_lm
        self.prefetch, self.rows, self.chains = prefetch, rows or chains, chains
        self.per_stage = mcmc_steps + 1  # actions per stage: the extension, then the MH steps
        self.actions = len(stage_caps) * self.per_stage
        device = self.device = start.tokens.device
        self.position = start
        self.log_target = torch.zeros(chains, dtype=torch.float64, device=device)
        self.plans = SuffixPlan(  # the cut of every chain's current MH request (stale while it extends)
            cut_index=torch.zeros(chains, dtype=torch.long, device=device),
            log_cut=torch.zeros(chains, start.capacity, dtype=torch.float64, device=device),
            movable=torch.zeros(chains, dtype=torch.bool, device=device),
            budget=torch.zeros(chains, dtype=torch.long, device=device),
        )
        self.action = torch.zeros(chains, dtype=torch.long)  # current action of every chain (CPU bookkeeping)
        self.ahead: dict[int, list[int]] = {}  # chain -> keys pre-fetched after its current request, in order
        self.queued = torch.zeros(chains, dtype=torch.long)  # len(ahead[chain])
        self.from_prefetch = torch.zeros(chains, dtype=torch.bool)  # the current request was pre-fetched
        self.current_key = torch.arange(chains)  # engine key of every chain's current request
        self.accept_ahead: dict[int, int] = {}  # chain -> key of its next MH step pre-fetched for an acceptance
        self.deferred: dict[int, tuple[int, int, int]] = {}  # such keys whose context is still being generated: (chain, cut, budget)
        self.length_only = torch.as_tensor([kernel.proposal.cut_rule.reads_lengths_only for kernel in kernels], dtype=torch.bool)
        self.prefetch_plans: dict[int, tuple[SuffixPlan, int]] = {}  # key -> (plans of its submission, row)
        self.held: dict[int, tuple[Continuation, int]] = {}  # key -> finished pre-fetch, (batch, row)
        stages = len(stage_caps)
        self.recorder = _Recorder(chains, stages * mcmc_steps, functionals)
        self.stage_of_draw = np.repeat(np.arange(stages), mcmc_steps)[None].repeat(chains, 0)
        self.extension_tokens = np.zeros((chains, stages * mcmc_steps), dtype=np.int64)
        self.engine = ContinuousBatch(proposer, rule, generator)
        self.bar = tqdm(total=chains * self.actions, desc="chains (asynchronous)", disable=not progress, leave=False)

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
            if is_mh:
                plan = self.kernels[k].proposal.plan(self.generator, sub)
                contexts, budget = plan.contexts(sub), plan.budget
                if prefetched:
                    self.prefetch_plans.update({key: (plan, i) for i, key in enumerate(keys)})
                else:
                    self.plans = scatter_chains(self.plans, index, plan)
            else:
                contexts, budget = extension_request(sub, self.stage_caps[k])
            if prefetched:
                for chain, key in zip(group.tolist(), keys):
                    self.ahead.setdefault(chain, []).append(key)
                self.queued[group] += 1
            else:
                self.from_prefetch[group] = False
                self.current_key[group] = torch.as_tensor(keys)
            self.engine.submit(keys, contexts, budget)

    def _fill_idle_rows(self) -> None:
        """Pre-fetch into the rows no current request needs, in rounds, chains with the most actions
        left first: the next action on the all-reject path of every chain that has none; then the
        next MH step of an acceptance (`_prefetch_acceptance`); then deeper on the all-reject path."""
        while (free := self.rows - self.engine.rows - len(self.deferred)) > 0:
            last = self.action + self.queued
            on_reject_path = (self.action < self.actions) & (last % self.per_stage > 0) & (last + 1 < self.actions)
            stage = (self.action // self.per_stage).clamp(max=len(self.stage_caps) - 1)
            on_accept_path = (
                (self.action < self.actions) & (self.action % self.per_stage > 0) & ((self.action + 1) % self.per_stage > 0)
                & self.length_only[stage] & ~torch.isin(torch.arange(self.chains), torch.as_tensor(list(self.accept_ahead), dtype=torch.long))
            )
            for candidates, accept in ((on_reject_path & (self.queued == 0), False), (on_accept_path, True), (on_reject_path, False)):
                chains = candidates.nonzero().squeeze(-1)
                if len(chains):
                    chains = chains[torch.argsort(self.action[chains], stable=True)][:free]
                    if accept:
                        self._prefetch_acceptance(chains)
                    else:
                        self._submit(chains, last[chains] + 1, prefetched=True)
                    break
            else:
                return

    def _prefetch_acceptance(self, chains: torch.Tensor) -> None:
        """Pre-fetch MH step j+1 of chains whose step j is in flight, for the branch where step j is
        accepted and its proposal runs to the stage cap (no EOS), so that the next state x' has the
        cap's length.  The cut law reads only lengths (`CutRule.reads_lengths_only`), so the cut m'
        is drawn now, from that length; the context `x'_<m'` is `x_<m'` when m' <= m (step j's
        cut), else `x_<m` followed by step j's first m' - m tokens, submitted once they are drawn
        (`_submit_acceptances`).  Kept only if step j is accepted with x' of the assumed length:
        a condition on step j alone, so given it the pre-fetch has its exact law."""
        stages = self.action[chains] // self.per_stage
        for k in torch.unique(stages).tolist():
            group = chains[stages == k]
            index = group.to(self.device)
            sub = gather_chains(self.position, index)
            plan = self.kernels[k].proposal.plan(self.generator, dataclasses.replace(sub, lengths=self._assumed_lengths(sub, k)))
            for i, (chain, cut, budget) in enumerate(zip(group.tolist(), plan.cut_index.tolist(), plan.budget.tolist())):
                key = -(int(self.action[chain] + 1) * self.chains + chain) - 1
                self.accept_ahead[chain] = key
                self.prefetch_plans[key] = (plan, i)
                self.deferred[key] = (chain, cut, budget)
        self._submit_acceptances()

    def _assumed_lengths(self, sub: SequenceBatch, stage: int) -> torch.Tensor:
        """The length an acceptance pre-fetch's cut is drawn for: the stage cap, which the accepted
        state has when its proposal draws no EOS (`_keeps_acceptance_prefetch` checks it)."""
        return torch.full_like(sub.lengths, self.stage_caps[stage])

    def _submit_acceptances(self) -> None:
        """Submit the acceptance pre-fetches whose context is complete (see `_prefetch_acceptance`)."""
        ready = []  # (key, chain, cut, budget, tokens of step j's proposal the context needs)
        for key, (chain, cut, budget) in self.deferred.items():
            needed = cut - int(self.plans.cut_index[chain])
            drawn = self.engine.drawn(int(self.current_key[chain])) if needed > 0 else None
            if needed <= 0:
                ready.append((key, chain, cut, budget, []))
            elif drawn is not None and len(drawn) >= needed:
                ready.append((key, chain, cut, budget, drawn[:needed].tolist()))
        if not ready:
            return
        index = torch.as_tensor([chain for _, chain, _, _, _ in ready], device=self.device)
        shared = torch.minimum(torch.as_tensor([cut for _, _, cut, _, _ in ready], device=self.device), self.plans.cut_index[index])
        contexts = gather_chains(self.position, index).contexts(shared).to_lists()
        for key, *_ in ready:
            del self.deferred[key]
        self.engine.submit(
            [key for key, *_ in ready],
            TokenBatch.from_lists([context + tail for context, (*_, tail) in zip(contexts, ready)], device=self.device),
            torch.as_tensor([budget for _, _, _, budget, _ in ready]),
        )

    def _branch(self, chain: int, accepted: bool) -> tuple[int | None, list[int]]:
        """After an MH step of a chain with requests pre-fetched from the state it was in: a
        rejection keeps that state, so the first pre-fetch becomes the current request; an
        acceptance leaves it, so every pre-fetch is withdrawn.  Returns (the promoted key or None,
        the withdrawn keys)."""
        keys = self.ahead.pop(chain)
        self.queued[chain] = 0
        if accepted:
            return None, keys
        if len(keys) > 1:
            self.ahead[chain], self.queued[chain] = keys[1:], len(keys) - 1
        return keys[0], []

    def _keeps_acceptance_prefetch(self, chain: int, key: int, accepted: bool, stage: int) -> bool:
        """An acceptance pre-fetch is kept only if the step was accepted and the chain's new state
        has the length its cut was drawn for (the stage cap)."""
        return accepted and int(self.position.lengths[chain]) == self.stage_caps[stage]

    def _withdraw(self, keys: list[int]) -> None:
        """Drop pre-fetched requests: running ones leave the batch, finished ones' tokens are discarded."""
        self.engine.cancel([key for key in keys if key not in self.held])
        for key in keys:
            self.prefetch_plans.pop(key, None)
            if key in self.held:
                batch, row = self.held.pop(key)
                self.proposer.counter.discard(int(batch.tokens.lengths[row]))

    def _promote(self, promoted: dict[int, int]) -> None:
        """Pre-fetched requests that became their chains' current ones: MH requests' cuts become
        current, and acceptance pre-fetches whose context was not complete are submitted now (the
        accepted proposal is the chain's state: their context is in it)."""
        if not promoted:
            return
        self.from_prefetch[list(promoted)] = True
        self.current_key[list(promoted)] = torch.as_tensor(list(promoted.values()))
        moved = [(chain, key) for chain, key in promoted.items() if key in self.prefetch_plans]
        if moved:
            index = torch.as_tensor([chain for chain, _ in moved], device=self.device)
            plans = _rows([self.prefetch_plans.pop(key) for _, key in moved])
            self.plans = scatter_chains(self.plans, index, plans)
        late = [(chain, key) for chain, key in promoted.items() if key in self.deferred]
        if late:
            for _, key in late:
                del self.deferred[key]
            index = torch.as_tensor([chain for chain, _ in late], device=self.device)
            sub, plans = gather_chains(self.position, index), gather_chains(self.plans, index)
            self.engine.submit([key for _, key in late], plans.contexts(sub), plans.budget)

    # ------------------------------------------------------------------ actions
    def _finish(self, chains: torch.Tensor, results: Continuation) -> tuple[torch.Tensor, torch.Tensor]:
        """Take the current action of every chain in `chains`, whose request finished with
        `results` (row i for chains[i]).  Returns the chains whose next request has already
        finished (pre-fetched) and the chains that need a new request."""
        actions = self.action[chains]
        kinds = (actions // self.per_stage) * 2 + (actions % self.per_stage > 0)
        accepted = torch.ones(len(chains), dtype=torch.bool)
        for kind in torch.unique(kinds).tolist():
            k, is_mh = kind // 2, kind % 2 == 1
            mine = (kinds == kind).nonzero().squeeze(-1)
            group = chains[mine]
            index = group.to(self.device)
            done = gather_chains(results, mine.to(self.device))
            sub = gather_chains(self.position, index)
            if is_mh:
                kernel = self.kernels[k]
                move = kernel.proposal.complete(sub, gather_chains(self.plans, index), done)
                new_state, info = kernel.decide(self.generator, MHState(sub, self.log_target[index]), move)
                draws = (k * self.mcmc_steps + actions[mine] % self.per_stage - 1).numpy()
                self.recorder.step(group.numpy(), draws, new_state, info)
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

    def run(self) -> tuple[SequenceBatch, Trace | None]:
        self._submit(torch.arange(self.chains), torch.zeros(self.chains, dtype=torch.long), prefetched=False)
        while self.engine.busy:
            keys, continuation = self.engine.step()
            if not keys:
                continue
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
        self.bar.close()
        return self.position, self.recorder.trace(self.stage_of_draw, self.extension_tokens)


def run_asynchronous_chains(proposer, rule, start, kernels, stage_caps, mcmc_steps, generator, **options):
    """`AsynchronousChains(...).run()`: the final positions and the trace (None when `mcmc_steps` is 0)."""
    return AsynchronousChains(proposer, rule, start, kernels, stage_caps, mcmc_steps, generator, **options).run()
