"""Pre-fetching for asynchronous chains (after Brockwell 2006): rows no chain's current request
needs draw each chain's next proposal for both outcomes of its MH step j, in flight from state x
with cut m (`rows` caps the batch, by default one row per chain):

* the all-reject path: MH steps j+1, j+2, ... of the stage, then the next stage's extension, all
  from x.  If step j is rejected the chain stays at x and the pre-fetched request, under way or
  done, becomes step j+1's; if it is accepted every request pre-fetched from x is withdrawn.
  Exact: the pre-fetch for step j+1 is a draw from q(. | x) with its own randomness, independent
  of step j's proposal and uniform, so given a rejection it has the law of a proposal drawn after.
* the acceptance: step j+1 from x', for kernels that plan from lengths only (uniform,
  within-block, restart cuts).  If step j's proposal draws no EOS, x' has the stage cap's length,
  so step j+1's cut m' is drawn now for that length; its context is x_<m' when m' <= m, else x_<m
  and the proposal's first m' - m tokens, submitted once those are drawn.  It is kept only if
  step j is accepted and x' has the assumed length, an event of step j alone, so given it the
  pre-fetch has step j+1's exact law; otherwise it is withdrawn.

Tokens of used pre-fetches count in `tokens_sampled`, of withdrawn ones in `tokens_discarded`; the
trace's `prefetched` stat marks the steps whose proposal was pre-fetched.  Every pre-fetch draws
from the streams of the action it pre-fetches, so a chain's draws are the same with and without.

Its interface to the driver is narrow.  The driver calls `fill()` after every decoding step, and
`decided(chains, accepted, stages)` once steps are decided (it returns the pre-fetches that became
current requests, and withdraws those of the branches not taken).  It calls back the driver's
`submit`, `plan_step`, `send_planned`, `drawn` and `cancel`, reads the chains' `action`,
`position` and `current` requests, and asks its two policy hooks, `_branch` and
`_keeps_acceptance_prefetch`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

from mcmc_llm.core.tree import gather_chains
from mcmc_llm.drivers.requests import Request
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.proposals.plans import gather_plan, plan_rows


class Prefetcher:
    """Pre-fetches of asynchronous chains (module docstring).  `length_only[k]`: stage k's kernel
    plans from lengths alone, so its next step can be pre-fetched for an acceptance.

    ahead[chain]: requests pre-fetched on the all-reject path after the chain's current one, in order;
    accept_ahead[chain]: its next MH step pre-fetched for an acceptance;
    waiting[request]: such requests whose context is still being generated, with (cut, budget)."""

    def __init__(self, chains: Any, length_only: Sequence[bool]):  # chains: the `AsynchronousChains` driver
        self.chains = chains
        self.length_only = torch.as_tensor(list(length_only), dtype=torch.bool)
        self.ahead: dict[int, list[Request]] = {}
        self.queued = torch.zeros(chains.chains, dtype=torch.long)  # len(ahead[chain])
        self.accept_ahead: dict[int, Request] = {}
        self.waiting: dict[Request, tuple[int, int]] = {}

    def fill(self) -> None:
        """Submit the acceptance pre-fetches whose context is complete, then pre-fetch into the rows
        no current request needs, in rounds, chains with the most actions left first: the next
        action on the all-reject path of every chain that has none; then the next MH step of an
        acceptance (`_prefetch_acceptance`); then deeper on the all-reject path."""
        driver = self.chains
        self._submit_acceptances()
        while (free := driver.rows - driver.busy_rows - len(self.waiting)) > 0:
            action, actions, per_stage = driver.action, driver.actions, driver.per_stage
            last = action + self.queued
            on_reject_path = (action < actions) & (last % per_stage > 0) & (last + 1 < actions)
            stage = (action // per_stage).clamp(max=len(driver.stage_caps) - 1)
            has_accept = torch.zeros(driver.chains, dtype=torch.bool)
            has_accept[list(self.accept_ahead)] = True
            on_accept_path = ((action < actions) & (action % per_stage > 0) & ((action + 1) % per_stage > 0)
                              & self.length_only[stage] & ~has_accept)
            for candidates, accept in ((on_reject_path & (self.queued == 0), False), (on_accept_path, True), (on_reject_path, False)):
                chains = candidates.nonzero().squeeze(-1)
                if len(chains):
                    chains = chains[torch.argsort(action[chains], stable=True)][:free]
                    if accept:
                        self._prefetch_acceptance(chains)
                    else:
                        for request in driver.submit(chains, last[chains] + 1, prefetched=True):
                            self.ahead.setdefault(request.chain, []).append(request)
                        self.queued[chains] += 1
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
        a condition on step j alone, so given it the pre-fetch has its exact law.  Its tokens are
        never stopped early: x' is not known when it is planned."""
        driver = self.chains
        stages = driver.action[chains] // driver.per_stage
        for k in torch.unique(stages).tolist():
            group = chains[stages == k]
            sub = gather_chains(driver.position, group.to(driver.device))
            assumed = dataclasses.replace(sub, lengths=self._assumed_lengths(sub, k))
            plan = driver.plan_step(k, group, driver.action[group] + 1, assumed, early_reject=False)
            for i, (chain, cut, budget) in enumerate(zip(group.tolist(), plan.plan.cut_index.tolist(), plan.plan.max_new_tokens.tolist())):
                request = Request(chain, int(driver.action[chain]) + 1, prefetched=True, plan=(plan, i))
                self.accept_ahead[chain] = request
                self.waiting[request] = (cut, budget)
        self._submit_acceptances()

    def _assumed_lengths(self, sub, stage: int) -> torch.Tensor:
        """The length an acceptance pre-fetch's cut is drawn for: the stage cap, which the accepted
        state has when its proposal draws no EOS (`_keeps_acceptance_prefetch` checks it)."""
        return torch.full_like(sub.lengths, self.chains.stage_caps[stage])

    def _current_cut(self, chain: int) -> int:
        plan, row = self.chains.current[chain].plan
        return int(plan.plan.cut_index[row])

    def _submit_acceptances(self) -> None:
        """Submit the acceptance pre-fetches whose context is complete (see `_prefetch_acceptance`)."""
        driver = self.chains
        ready = []  # (request, cut, tokens of step j's proposal the context needs)
        for request, (cut, _) in self.waiting.items():
            needed = cut - self._current_cut(request.chain)
            drawn = driver.drawn(driver.current[request.chain]) if needed > 0 else None
            if needed <= 0:
                ready.append((request, cut, []))
            elif drawn is not None and len(drawn) >= needed:
                ready.append((request, cut, drawn[:needed].tolist()))
        if not ready:
            return
        chains = [request.chain for request, _, _ in ready]
        current_cuts = torch.as_tensor([self._current_cut(chain) for chain in chains], device=driver.device)
        shared = torch.minimum(torch.as_tensor([cut for _, cut, _ in ready], device=driver.device), current_cuts)
        contexts = gather_chains(driver.position, torch.as_tensor(chains, device=driver.device)).contexts(shared).to_lists()
        contexts = [context + tail for context, (_, _, tail) in zip(contexts, ready)]
        requests = [request for request, _, _ in ready]
        for request in requests:
            del self.waiting[request]
        for plan, positions in plan_rows([request.plan for request in requests]):  # plans of other stages keep their samplers
            driver.send_planned([requests[i] for i in positions], plan,
                                TokenBatch.from_lists([contexts[i] for i in positions], device=driver.device))

    def branch(self, chain: int, accepted: bool) -> tuple[Request | None, list[Request]]:
        """After an MH step of a chain with requests pre-fetched from the state it was in: a
        rejection keeps that state, so the first pre-fetch becomes the current request; an
        acceptance leaves it, so every pre-fetch is withdrawn.  Returns (the promoted request or
        None, the withdrawn ones)."""
        requests = self.ahead.pop(chain)
        self.queued[chain] = 0
        if accepted:
            return None, requests
        if len(requests) > 1:
            self.ahead[chain], self.queued[chain] = requests[1:], len(requests) - 1
        return requests[0], []

    def decided(self, chains: list[int], accepted: list[bool], stages: list[int]) -> dict[int, Request]:
        """The steps of `chains` are decided: the pre-fetches that become their current requests
        (made so here), every other pre-fetch of a branch not taken withdrawn.  Acceptance
        pre-fetches whose context was not complete are submitted now (the accepted proposal is the
        chain's state: their context is in it)."""
        driver, promoted, withdrawn = self.chains, {}, []
        for chain, outcome, stage in zip(chains, accepted, stages):
            if self.queued[chain] > 0:
                request, dropped = driver._branch(chain, outcome)
                withdrawn += dropped
                if request is not None:
                    promoted[chain] = request
            if chain in self.accept_ahead:
                request = self.accept_ahead.pop(chain)
                if driver._keeps_acceptance_prefetch(chain, request, outcome, stage):
                    promoted[chain] = request
                elif self.waiting.pop(request, None) is None:
                    withdrawn.append(request)
        if withdrawn:
            driver.cancel(withdrawn)
        for chain, request in promoted.items():
            driver.current[chain] = request
            if request in self.waiting:
                del self.waiting[request]
                plan, row = request.plan
                plan = gather_plan(plan, torch.as_tensor([row]))
                sub = gather_chains(driver.position, torch.as_tensor([chain], device=driver.device))
                driver.send_planned([request], plan, sub.contexts(plan.plan.cut_index))
        return promoted
