"""Slot layout of a batch on the transformers backend (`mcmc_llm.lm.hf`).

Layout of a batch.  Row b of the KV cache holds `S` slots; a boolean `mask[b, s]` says which slots
hold real tokens of row b.  Masked slots ("holes") may sit anywhere: left of a reused prompt that is
shorter than the longest one in the batch, and after the new tokens of rows with fewer new tokens
than the longest.  Every forward pass gets the 2-D mask over all `S + Q` slots and explicit
`position_ids`: the i-th real token of a row has position i whatever slot it occupies, so holes
change nothing but cost (rotary embeddings are applied before keys are cached, and masked keys get
zero attention).  New tokens are left-aligned in each forward block (`query_block`: padding after
them), so no query slot is ever fully masked; the next-token log-probs are gathered at each row's
last token.  Reused encodings (`mcmc_llm.lm.hf.reuse`) are laid out right-aligned
(`reused_slots`), and two layouts are joined row-wise by `stack_slots`.

States (`HFState`) are immutable: the cache tensors are never written in place, so a caller may
branch from any state.  `cache_from_kv` / `kv_from_cache` convert between the per-layer
(keys, values) tuples held in a state and a transformers `DynamicCache`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from mcmc_llm.lm.hf.reuse import Reuse


def cache_from_kv(kv: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """A transformers `DynamicCache` holding `kv` (per layer [B, H, S, D]) without copying it."""
    from transformers import DynamicCache

    cache = DynamicCache()
    if not kv:
        return cache
    if hasattr(cache, "layers"):  # transformers >= 4.56: a list of cache layers
        from transformers.cache_utils import DynamicLayer

        for keys, values in kv:
            layer = DynamicLayer()
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
            cache.layers.append(layer)
        return cache
    return DynamicCache.from_legacy_cache(tuple(kv))  # older transformers


def kv_from_cache(cache) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    if hasattr(cache, "layers"):
        return tuple((layer.keys, layer.values) for layer in cache.layers)
    return tuple(zip(cache.key_cache, cache.value_cache))


@dataclasses.dataclass(frozen=True)
class HFState:
    """Decoding state: next-token `logprobs` [B, V]; per-layer keys/values `kv` ([B, H, S, D]);
    `mask` [B, S] (True where a slot holds a real token); `ids` [B, S] the token in each slot (0 in
    holes); `lengths` [B] real tokens per row."""

    logprobs: torch.Tensor
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    mask: torch.Tensor
    ids: torch.Tensor
    lengths: torch.Tensor


def reused_slots(plans: list[Reuse], device: torch.device):
    """Right-aligned reused keys/values for a batch ([B, H, P, D] per layer), their mask [B, P]
    and token ids [B, P]."""
    lengths = [plan.length for plan in plans]
    width, batch = max(lengths), len(lengths)
    mask = torch.zeros(batch, width, dtype=torch.bool, device=device)
    ids = torch.zeros(batch, width, dtype=torch.long, device=device)
    if width == 0:
        return (), mask, ids
    used = [b for b in range(batch) if lengths[b] > 0]
    template = plans[used[0]].entry.kv
    kv = []
    for layer, (keys0, values0) in enumerate(template):
        keys = keys0.new_zeros(batch, keys0.shape[1], width, keys0.shape[3])
        values = values0.new_zeros(batch, values0.shape[1], width, values0.shape[3])
        for b in used:
            k, v = plans[b].entry.kv[layer]
            keys[b, :, width - lengths[b] :] = k[0, :, : lengths[b]]
            values[b, :, width - lengths[b] :] = v[0, :, : lengths[b]]
        kv.append((keys, values))
    for b in used:
        mask[b, width - lengths[b] :] = True
        ids[b, width - lengths[b] :] = plans[b].entry.tokens[: lengths[b]].to(device)
    return tuple(kv), mask, ids


def rest_logprobs(logprobs_of, hidden: torch.Tensor, rests: list[list[int]], plans: list[Reuse]) -> torch.Tensor:
    """Next-token log-probs [B, V] of contexts whose remainders `rests` were encoded (left-aligned,
    `query_block`) into `hidden` [B, W, H] after their reused parts `plans`: `logprobs_of` (the LM
    head and log-softmax) at each row's last remainder token, or, for a row with no remainder (its
    whole context reused), the log-probs stored with the reused entry."""
    last = torch.as_tensor([max(len(rest) - 1, 0) for rest in rests], device=hidden.device)
    logprobs = logprobs_of(hidden[torch.arange(len(rests), device=hidden.device), last])
    for b, rest in enumerate(rests):
        if not rest:
            logprobs[b] = plans[b].entry.logprobs
    return logprobs


def query_block(rows: list[list[int]], offsets: list[int], width: int, device):
    """Row b's new tokens at columns 0..len-1 (padding after them); positions from `offsets[b]`.

    Padding goes after a row's tokens, never before, so every padding slot has a real slot
    (its own tokens or its prefix) to attend to: no query is fully masked, which some attention
    kernels (eager, several GPU kernels) turn into NaN that would then leak through 0 * NaN."""
    batch = len(rows)
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.bool)
    positions = torch.zeros(batch, width, dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            ids[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[b, : len(row)] = True
            positions[b, : len(row)] = torch.arange(offsets[b], offsets[b] + len(row))
    return ids.to(device), mask.to(device), positions.to(device)


def stack_slots(first: tuple, second: tuple) -> tuple:
    """Rows of two (kv, mask, ids) slot layouts in one, each right-aligned to the wider one: the
    narrower gets holes on the left.  Every key/value tensor is copied once, into its place; an
    empty `kv` (rows that reuse nothing) contributes holes only."""
    width = max(first[1].shape[1], second[1].shape[1])
    rows = [first[1].shape[0], second[1].shape[0]]
    like = first[0] or second[0]

    def stacked(parts: list[torch.Tensor | None], template: torch.Tensor) -> torch.Tensor:
        out = template.new_zeros(sum(rows), template.shape[1], width, template.shape[3])
        start = 0
        for part, count in zip(parts, rows):
            if part is not None:
                out[start : start + count, :, width - part.shape[2] :] = part
            start += count
        return out

    kv = []
    for layer, (keys, values) in enumerate(like):
        (keys1, values1), (keys2, values2) = (part[layer] if part else (None, None) for part in (first[0], second[0]))
        kv.append((stacked([keys1, keys2], keys), stacked([values1, values2], values)))
    left_pad = lambda t: torch.nn.functional.pad(t, (width - t.shape[1], 0))  # noqa: E731
    return tuple(kv), torch.cat([left_pad(first[1]), left_pad(second[1])]), torch.cat([left_pad(first[2]), left_pad(second[2])])


def select_slots(state: HFState, rows: torch.Tensor) -> HFState:
    """Rows `rows` (a LongTensor on the state's device; repeats allowed) of `state`, without the
    slot columns that no kept row uses (finished, often longest, rows stop costing compute)."""
    mask, ids = state.mask.index_select(0, rows), state.ids.index_select(0, rows)
    used = mask.any(0).nonzero().squeeze(-1)
    first = int(used[0]) if len(used) else mask.shape[1]
    if len(used) == mask.shape[1] - first:  # the used columns are a suffix (rows are right-aligned): slice, one copy
        trim = lambda t, dim: t.narrow(dim, first, t.shape[dim] - first)  # noqa: E731
    else:
        trim = lambda t, dim: t.index_select(dim, used)  # noqa: E731
    kv = tuple((trim(keys, 2).index_select(0, rows), trim(values, 2).index_select(0, rows)) for keys, values in state.kv)
    mask, ids = trim(mask, 1), trim(ids, 1)
    return HFState(state.logprobs.index_select(0, rows), kv, mask, ids, state.lengths.index_select(0, rows))


def check_full_attention(config) -> None:
    """Refuse configs with sliding-window or other non-full-attention layers: their caches are not
    addressed by slot masks."""
    layer_types = getattr(config, "layer_types", None) or []
    other = sorted({t for t in layer_types if t != "full_attention"})
    window = getattr(config, "sliding_window", None) if not layer_types else None
    longest = getattr(config, "max_position_embeddings", None)
    if window is not None and longest is not None and window >= longest:
        window = None  # a window no sequence can exceed (Phi-3.5: 262144 > 131072) is full attention
    if other or window is not None:
        raise NotImplementedError(
            f"HFLanguageModel supports models whose layers are all full attention; this config has "
            f"{other or ['sliding_window=' + str(window)]}"
        )
