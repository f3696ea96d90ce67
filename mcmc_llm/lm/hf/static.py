"""The static-slot decoding engine of the transformers backend (`HFLanguageModel(engine="static")`).

The protocol operations (`start`, `advance`, `select_rows`, `concat_rows`, `admit`, `retire`) on
the in-place arenas of `mcmc_llm.lm.hf.slots`.  They compute what the dynamic engine computes
(same reuse plans, same forward passes, same `ComputeCounter` records), but no operation copies or
re-stacks the whole batch: a decoding step writes one slot per row, dropping a row moves at most
one other row, admitting a row writes only its reused prefix, and retiring a row copies only its
own positions into the stash.  States are linear (see `mcmc_llm.lm.hf.slots`).
"""

from __future__ import annotations

import dataclasses
import weakref

import torch

from mcmc_llm.lm.hf.decode_step import DecodeSteps
from mcmc_llm.lm.hf.layout import query_block, rest_logprobs
from mcmc_llm.lm.hf.reuse import Encoded, Reuse
from mcmc_llm.lm.hf.slots import SlotArena, SlotState, slot_cache, visible_mask
from mcmc_llm.lm.protocol import TokenBatch

ATTENTION = ("sdpa", "eager")  # implementations that take the engine's explicit 4-D mask


class StaticSlotEngine:
    """Decoding on static slots for `lm` (an `HFLanguageModel`: its decoder, LM head, reuse plans,
    stash and counter)."""

    def __init__(self, lm):
        self.lm = lm
        self._steps_by_mode: dict[str, DecodeSteps] = {}
        self.use_graphs("off")

    def use_graphs(self, mode: str) -> None:
        """Decode with the static-shape step in `mode` (`hf.decode_step.GRAPH_MODES`); the steps of
        each mode are kept, so switching back reuses what was compiled."""
        steps = DecodeSteps(self.lm, mode)  # validates and resolves the mode for the device
        self.steps = self._steps_by_mode.setdefault(steps.mode, steps)
        self.reserved = (0, 0)  # (rows, tokens per row) announced for the next start or admission
        self._last_arena: SlotArena | None = None

    def reserve(self, rows: int, length: int) -> None:
        """Announce `rows` rows of up to `length` tokens: the next `start` makes its arena that large,
        or the next `admit` grows the live one to it (one growth instead of several on the way).
        Used once: a later, unrelated batch is not sized by an old announcement."""
        self.reserved = (max(int(rows), 0), max(int(length), 0))

    def _take_reserved(self) -> tuple[int, int]:
        reserved, self.reserved = self.reserved, (0, 0)
        return reserved

    # ----------------------------------------------------------------- forward
    def _forward(self, arena: SlotArena, first: int, ids: torch.Tensor, offsets: list[int]) -> torch.Tensor:
        """Push `ids` [n, Q] through the decoder as the tokens of physical rows `first..first+n-1`
        at positions `offsets[i] + q`; their keys/values land in those slots.  Returns hidden [n, Q, H]."""
        lm = self.lm
        count, queries = ids.shape
        width = max(offsets) + queries
        arena.ensure(first + count, width)
        device = arena.device
        starts = torch.as_tensor(offsets, dtype=torch.long, device=device)
        positions = starts[:, None] + torch.arange(queries, device=device)[None]
        rows = torch.arange(first, first + count, device=device)[:, None]
        if queries == 1 and min(offsets) == max(offsets):
            # every row attends to all `width` slots: no mask, so transformers takes its unmasked
            # path (SDPA without a mask: fused kernels, grouped-query attention without copies)
            mask = None
        else:
            mask = visible_mask(starts, queries, width, getattr(lm.model.config, "_attn_implementation", "sdpa"), lm.dtype)
        cache = slot_cache(arena, first, first + count, (rows, positions), width, lm.num_layers)
        out = lm._decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{lm._cache_keyword: cache})
        arena.ids[rows, positions] = ids
        return out.last_hidden_state

    def _encode_rests(self, arena: SlotArena, first: int, rows: list[list[int]], plans: list[Reuse]) -> torch.Tensor:
        """Rows `first + i` hold the reused part of `rows[i]`; encode the rest.  Returns log-probs [n, V]."""
        lm = self.lm
        prefix_lengths = [plan.length for plan in plans]
        rests = [row[p:] for row, p in zip(rows, prefix_lengths)]
        rest_lengths = [len(rest) for rest in rests]
        width = max(rest_lengths)
        for i, row in enumerate(rows):
            arena.lengths[first + i] = len(row)
        if width == 0:
            return torch.stack([plan.entry.logprobs for plan in plans])
        ids, _, _ = query_block(rests, prefix_lengths, width, arena.device)
        hidden = self._forward(arena, first, ids, prefix_lengths)
        lm.counter.record_encoding(torch.as_tensor(prefix_lengths), torch.as_tensor(rest_lengths))
        return rest_logprobs(lm._logprobs, hidden, rests, plans)

    def _step(self, arena: SlotArena, rows: tuple[int, ...], tokens: torch.Tensor, plans: list[Reuse] = ()) -> torch.Tensor:
        """One decoding step: `tokens[b]` after row b (physical `rows[b]`), and, in the same pass,
        the last token of each admitted context (physical rows after the live ones, reused prefix
        already written).  Returns log-probs [len(rows) + len(plans), V] in logical order."""
        lm, live, device = self.lm, len(rows), arena.device
        order = torch.as_tensor(rows, dtype=torch.long, device=device)
        identity = rows == tuple(range(live))
        physical = tokens.to(device, torch.long)
        if not identity:
            physical = torch.empty_like(physical).index_copy_(0, order, physical)
        offsets = arena.lengths[:live] + [plan.length for plan in plans]
        ids = torch.cat([physical, torch.as_tensor([plan.last for plan in plans], dtype=torch.long, device=device)])
        arena.ensure(len(offsets), max(offsets) + 1)
        if len(offsets) == arena.live and self.steps.serves(arena):  # padding rows beyond `live` are free rows
            logprobs = self.steps.run(arena, ids, torch.as_tensor(offsets, dtype=torch.long).to(device, non_blocking=True))
        else:
            logprobs = lm._logprobs(self._forward(arena, 0, ids[:, None], offsets)[:, -1])
        lm.counter.record_encoding(torch.as_tensor(offsets), torch.ones(len(offsets), dtype=torch.long))
        for row in range(len(offsets)):
            arena.lengths[row] += 1
        if not identity:
            logprobs = torch.cat([logprobs[order], logprobs[live:]])
        return logprobs

    @staticmethod
    def _next(arena: SlotArena, logprobs: torch.Tensor, rows: tuple[int, ...]) -> SlotState:
        arena.version += 1
        lengths = torch.as_tensor([arena.lengths[r] for r in rows], dtype=torch.long, device=arena.device)
        state = SlotState(logprobs, lengths, arena, rows, arena.version)
        arena.newest = weakref.ref(state)
        return state

    def _arena(self, rows: int, slots: int) -> SlotArena:
        """An arena for a new batch.  With a static-shape step on, the last one is reused when no
        state of it is left (states are linear: only the newest could be used) and it is large
        enough, so that its compiled steps and captured graphs are reused too; otherwise a new one."""
        last = self._last_arena
        if (self.steps.mode != "off" and last is not None and (last.newest is None or last.newest() is None)
                and last.capacity_rows >= rows and last.capacity_slots >= slots):
            last.reset()
            return last
        self._last_arena = SlotArena(self.lm.device, rows, slots)
        return self._last_arena

    # ---------------------------------------------------------------- protocol
    def start(self, contexts: TokenBatch) -> SlotState:
        rows = contexts.to_lists()
        plans = self.lm._plan(rows)
        count = len(rows)
        reserved_rows, reserved_length = self._take_reserved()
        arena = self._arena(max(count, reserved_rows), max(max(map(len, rows)) + 1, reserved_length))
        arena.live = count
        arena.write_reused(plans, 0)
        return self._next(arena, self._encode_rests(arena, 0, rows, plans), tuple(range(count)))

    def advance(self, state: SlotState, tokens: torch.Tensor) -> SlotState:
        arena = state.check()
        return self._next(arena, self._step(arena, state.rows, tokens), state.rows)

    def select_rows(self, state: SlotState, rows: torch.Tensor) -> SlotState:
        arena = state.check()
        kept = torch.as_tensor(rows, dtype=torch.long).reshape(-1).tolist()
        physical = arena.select([state.rows[k] for k in kept])
        index = torch.as_tensor(kept, dtype=torch.long, device=state.logprobs.device)
        return self._next(arena, state.logprobs.index_select(0, index), tuple(physical))

    def admit(self, state: SlotState, tokens: torch.Tensor, contexts: TokenBatch) -> SlotState:
        """Advance `state` by `tokens` and add rows for `contexts` after the live ones: their reused
        prefixes are written into fresh rows, and when every context needs exactly one token encoded
        (the usual MH proposal) it goes through the decoding step's forward pass."""
        arena = state.check()
        lm = self.lm
        rows = contexts.to_lists()
        plans = lm._plan(rows)
        lm._largest_batch = max(lm._largest_batch, len(state.rows) + len(rows))
        live = arena.live
        reserved_rows, reserved_length = self._take_reserved()
        arena.ensure(max(live + len(rows), reserved_rows), max(max(map(len, rows)) + 1, reserved_length))
        arena.live = live + len(rows)
        arena.write_reused(plans, live)
        new_rows = tuple(range(live, live + len(rows)))
        if all(len(row) - plan.length == 1 for row, plan in zip(rows, plans)):
            merged = [_Admitted(plan.length, row[-1]) for row, plan in zip(rows, plans)]
            logprobs = self._step(arena, state.rows, tokens, merged)
        else:
            old = self._step(arena, state.rows, tokens)
            logprobs = torch.cat([old, self._encode_rests(arena, live, rows, plans)])
        return self._next(arena, logprobs, state.rows + new_rows)

    def concat_rows(self, first: SlotState, second: SlotState) -> SlotState:
        """The rows of `second` are copied after those of `first` (both states are consumed)."""
        arena, other = first.check(), second.check()
        if arena is other:
            raise ValueError("concat_rows needs two states of different batches; these share one arena")
        live = arena.live
        arena.ensure(live + len(second.rows), max(other.lengths[r] for r in second.rows) + 1)
        arena.live = live + len(second.rows)
        arena.copy_from(other, list(second.rows), live)
        other.version += 1
        return self._next(arena, torch.cat([first.logprobs, second.logprobs]), first.rows + tuple(range(live, arena.live)))

    def retired(self, state: SlotState, rows: torch.Tensor) -> list[Encoded]:
        """Rows `rows` of `state` as stash entries: tokens, keys/values and log-probs, copied out of
        their own slots."""
        arena = state.check()
        entries = []
        for b in torch.as_tensor(rows).reshape(-1).tolist():
            row = state.rows[b]
            length = arena.lengths[row]
            kv = tuple((keys[row : row + 1, :, :length].clone(), values[row : row + 1, :, :length].clone()) for keys, values in arena.layers)
            entries.append(Encoded(arena.ids[row, :length].clone().cpu(), kv, state.logprobs[b].clone()))
        return entries


@dataclasses.dataclass(frozen=True)
class _Admitted:
    """An admitted context: `length` reused tokens already in its row, then `last` to encode."""

    length: int
    last: int
