"""The dynamic decoding engine of the transformers backend (`HFLanguageModel(engine="dynamic")`).

The protocol operations on immutable states (`HFState`, slot layout in `mcmc_llm.lm.hf.layout`):
every decoding step concatenates the new keys and values to the cache, `select_rows` indexes the
cache along the batch dimension (dropping slot columns no kept row uses), and admitting rows
stacks their reused prefixes under the live rows.  No tensor is ever written in place, so a caller
may branch from any state; the static-slot engine (`mcmc_llm.lm.hf.static`) gives the same results
without the copies, but with linear states.
"""

from __future__ import annotations

import torch

from mcmc_llm.lm.hf.layout import HFState, query_block, rest_logprobs, reused_slots, select_slots, stack_slots
from mcmc_llm.lm.hf.reuse import Encoded, Reuse
from mcmc_llm.lm.protocol import TokenBatch


class DynamicEngine:
    """Decoding on immutable states for `lm` (an `HFLanguageModel`: its `_forward`, reuse plans and counter)."""

    def __init__(self, lm):
        self.lm = lm

    def start(self, contexts: TokenBatch) -> HFState:
        rows = contexts.to_lists()
        return self.start_planned(rows, self.lm._plan(rows))

    def start_planned(self, rows: list[list[int]], plans: list[Reuse]) -> HFState:
        lm, device = self.lm, self.lm.device
        prefix_lengths = [plan.length for plan in plans]
        kv, past_mask, past_ids = reused_slots(plans, device)
        rests = [row[p:] for row, p in zip(rows, prefix_lengths)]
        rest_lengths = [len(r) for r in rests]
        lengths = torch.as_tensor([len(r) for r in rows], dtype=torch.long, device=device)
        width = max(rest_lengths)
        if width == 0:
            logprobs = torch.stack([plans[b].entry.logprobs for b in range(len(rows))])
            return HFState(logprobs, kv, past_mask, past_ids, lengths)
        ids, query_mask, positions = query_block(rests, prefix_lengths, width, device)
        hidden, kv = lm._forward(ids, query_mask, positions, kv, past_mask)
        lm.counter.record_encoding(torch.as_tensor(prefix_lengths), torch.as_tensor(rest_lengths))
        logprobs = rest_logprobs(lm._logprobs, hidden, rests, plans)
        mask = torch.cat([past_mask, query_mask], dim=1)
        return HFState(logprobs, kv, mask, torch.cat([past_ids, ids], dim=1), lengths)

    def advance(self, state: HFState, tokens: torch.Tensor) -> HFState:
        return self._one_token_step(state.kv, state.mask, state.ids, tokens, state.lengths)

    def _one_token_step(self, kv, past_mask, past_ids, tokens: torch.Tensor, positions: torch.Tensor) -> HFState:
        """Push one token per row (`tokens[b]` at position `positions[b]`) after the cached slots."""
        lm = self.lm
        ids = tokens.to(lm.device, torch.long)[:, None]
        query_mask = torch.ones_like(ids, dtype=torch.bool)
        hidden, kv = lm._forward(ids, query_mask, positions[:, None], kv, past_mask)
        lm.counter.record_encoding(positions, torch.ones_like(positions))
        mask = torch.cat([past_mask, query_mask], dim=1)
        return HFState(lm._logprobs(hidden[:, -1]), kv, mask, torch.cat([past_ids, ids], dim=1), positions + 1)

    def select_rows(self, state: HFState, rows: torch.Tensor) -> HFState:
        return select_slots(state, torch.as_tensor(rows, dtype=torch.long, device=self.lm.device))

    def concat_rows(self, first: HFState, second: HFState) -> HFState:
        """Rows of `first` then of `second`; each state's slots are right-aligned (holes on the left),
        which keeps rows that decode side by side sharing their newest columns."""
        kv, mask, ids = stack_slots((first.kv, first.mask, first.ids), (second.kv, second.mask, second.ids))
        return HFState(torch.cat([first.logprobs, second.logprobs]), kv, mask, ids, torch.cat([first.lengths, second.lengths]))

    def admit(self, state: HFState, tokens: torch.Tensor, contexts: TokenBatch) -> HFState:
        """`advance` plus new rows: one forward pass when every new context needs exactly one token
        encoded (its reused keys/values stacked under the live rows'); otherwise the new rows are
        started separately and joined (`concat_rows`)."""
        lm = self.lm
        rows = contexts.to_lists()
        plans = lm._plan(rows)
        lm._largest_batch = max(lm._largest_batch, len(state.lengths) + len(rows))
        if any(len(row) - plan.length != 1 for row, plan in zip(rows, plans)):
            return self.concat_rows(self.advance(state, tokens), self.start_planned(rows, plans))
        prefix_lengths = torch.as_tensor([plan.length for plan in plans], dtype=torch.long, device=lm.device)
        kv, past_mask, past_ids = stack_slots((state.kv, state.mask, state.ids), reused_slots(plans, lm.device))
        last_tokens = torch.as_tensor([row[-1] for row in rows], dtype=torch.long, device=lm.device)
        tokens = torch.cat([tokens.to(lm.device, torch.long), last_tokens])
        return self._one_token_step(kv, past_mask, past_ids, tokens, torch.cat([state.lengths, prefix_lengths]))

    def retired(self, state: HFState, rows: torch.Tensor) -> list[Encoded]:
        """Rows `rows` of `state` as stash entries (their real slots only)."""
        entries = []
        for b in torch.as_tensor(rows).reshape(-1).tolist():
            slots = state.mask[b].nonzero().squeeze(-1)
            tokens = state.ids[b].index_select(0, slots).cpu()
            kv = tuple((k[b : b + 1].index_select(2, slots), v[b : b + 1].index_select(2, slots)) for k, v in state.kv)
            entries.append(Encoded(tokens, kv, state.logprobs[b].clone()))
        return entries
