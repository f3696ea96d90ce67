"""Pre-fetching for asynchronous chains: idle rows draw each chain's next proposal for both
outcomes of its MH step in flight (after Brockwell 2006).  The exactness argument is in the
module docstring of `mcmc_llm.drivers.asynchronous`; this mixin holds the bookkeeping:

* `_fill_idle_rows`: what to pre-fetch into the rows no current request needs;
* `_prefetch_acceptance` / `_submit_acceptances`: step j+1 for the branch where step j is
  accepted (proposals that read only lengths);
* `_branch`, `_keeps_acceptance_prefetch`, `_withdraw`, `_promote`: what becomes of pre-fetches
  once the step they wait on is decided.

Every pre-fetched request draws from the streams of the action it pre-fetches, so a chain's
draws are the same with and without pre-fetching.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from mcmc_llm.kernels.mh import MHState
from mcmc_llm.core.tree import concat_padded, gather_chains
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.plans import gather_plan, plan_rows


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
    return gather_chains(concat_padded(pieces), torch.argsort(torch.as_tensor(order)))


class Prefetching:
    """Pre-fetching methods of `AsynchronousChains` (which holds the state they use)."""

    def _fill_idle_rows(self) -> None:
        """Pre-fetch into the rows no current request needs, in rounds, chains with the most actions
        left first: the next action on the all-reject path of every chain that has none; then the
        next MH step of an acceptance (`_prefetch_acceptance`); then deeper on the all-reject path."""
        while (free := self.rows - self._busy_rows - len(self.deferred)) > 0:
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
            streams = self._streams(group, self.action[group] + 1)
            assumed = MHState(dataclasses.replace(sub, lengths=self._assumed_lengths(sub, k)), self.log_target[index])
            request = self._request(self.kernels[k].plan(streams, assumed, early_reject=False))  # x' is unknown: no stop rule
            plan = request.plan
            for i, (chain, cut, budget) in enumerate(zip(group.tolist(), plan.cut_index.tolist(), plan.max_new_tokens.tolist())):
                key = -(int(self.action[chain] + 1) * self.chains + chain) - 1
                self.accept_ahead[chain] = key
                self.prefetch_plans[key] = (request, i)
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
            needed = cut - self._current_cut(chain)
            drawn = self._drawn(int(self.current_key[chain])) if needed > 0 else None
            if needed <= 0:
                ready.append((key, chain, cut, budget, []))
            elif drawn is not None and len(drawn) >= needed:
                ready.append((key, chain, cut, budget, drawn[:needed].tolist()))
        if not ready:
            return
        chains = [chain for _, chain, _, _, _ in ready]
        current_cuts = torch.as_tensor([self._current_cut(chain) for chain in chains], device=self.device)
        shared = torch.minimum(torch.as_tensor([cut for _, _, cut, _, _ in ready], device=self.device), current_cuts)
        contexts = gather_chains(self.position, torch.as_tensor(chains, device=self.device)).contexts(shared).to_lists()
        keys = [key for key, *_ in ready]
        for key in keys:
            del self.deferred[key]
        contexts = [context + tail for context, (*_, tail) in zip(contexts, ready)]
        for request, positions in plan_rows([self.prefetch_plans[key] for key in keys]):  # plans of other stages keep their samplers
            self._submit_planned([keys[i] for i in positions], torch.as_tensor([chains[i] for i in positions]), request,
                                 TokenBatch.from_lists([contexts[i] for i in positions], device=self.device))

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
        running = [key for key in keys if key not in self.held]
        for engine in self.engines.values():
            engine.cancel(running)
        for key in keys:
            self.prefetch_plans.pop(key, None)
            if key in self.held:
                batch, row = self.held.pop(key)
                drawn = int(batch.tokens.lengths[row])
                self.proposer.counter.discard(drawn)
                if bool(batch.stopped()[row]):  # no longer a part of `tokens_sampled`
                    self.proposer.counter.tokens_rejected_early -= drawn

    def _promote(self, promoted: dict[int, int]) -> None:
        """Pre-fetched requests that became their chains' current ones: MH requests' cuts become
        current, and acceptance pre-fetches whose context was not complete are submitted now (the
        accepted proposal is the chain's state: their context is in it)."""
        if not promoted:
            return
        self.from_prefetch[list(promoted)] = True
        self.current_key[list(promoted)] = torch.as_tensor(list(promoted.values()))
        for chain, key in promoted.items():
            if key in self.prefetch_plans:
                self.current_plans[chain] = self.prefetch_plans.pop(key)
        for chain, key in promoted.items():
            if key in self.deferred:
                del self.deferred[key]
                request, row = self.current_plans[chain]
                request = gather_plan(request, torch.as_tensor([row]))
                sub = gather_chains(self.position, torch.as_tensor([chain], device=self.device))
                self._submit_planned([key], torch.as_tensor([chain]), request, sub.contexts(request.plan.cut_index))

    # ------------------------------------------------------------------ actions
