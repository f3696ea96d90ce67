"""Static key/value slots: the in-place decoding engine of the transformers backend (`mcmc_llm.lm.hf`).

An arena (`SlotArena`) preallocates, per layer, keys and values of shape [R, H, S, D]: R row slots,
S token slots each.  Row r holds one sequence, its i-th token in slot i (no holes), so the only
per-row layout is its length.  The rows of a batch are the arena's first `live` rows, in any
order: a state maps its row b to physical row `rows[b]`.  Every operation writes or copies only
the rows and positions it concerns, in place:

* a forward pass writes the new keys/values of row r at slots `length_r .. length_r + q - 1` and
  attends over the view `keys[first:stop, :, :width]`, no concatenation;
* dropping rows (`select`) moves a surviving row from the tail into each freed physical row (a
  copy of that row's positions only), so the live rows stay a prefix of the arena; repeated rows
  (resampling) are copied into free rows;
* admitting rows writes their reused prefixes (a registered prompt, or the prefix `x_<m` of a
  retired row, `mcmc_llm.lm.hf.reuse`) into fresh rows after the live ones;
* retiring a row copies its own positions out of the slots into the sequence stash.

Attention masks are never concatenated: the mask of a forward pass is one comparison of slot
indices with query positions, `visible[b, q, s] = s <= length_b + q` (causal, and nothing beyond
a row's own tokens).  Position ids are `length_b + q`, so keys, values and log-probs are those of
the dynamic engine (`mcmc_llm.lm.hf.layout`) up to floating-point summation order.

States are *linear*: advancing, selecting or admitting consumes the state (the arena is written in
place) and returns the next one; using a consumed state raises `StaleStateError`.  The generation
path (`mcmc_llm.lm.generation.ContinuousBatch`), Power-SMC and the rollout sampler only ever
continue from the newest state.  Code that branches from an older state uses the dynamic engine
(`HFLanguageModel(..., engine="dynamic")`), whose states are immutable.

Capacity grows geometrically when a row or slot beyond it is needed (one copy of the live rows);
`reserve(rows, length)` (called by `ContinuousBatch.submit` with its caps) allocates it up front.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from mcmc_llm.lm.hf.reuse import Reuse

SLOT_ROUNDING = 32  # token slots are allocated in multiples of this


class StaleStateError(RuntimeError):
    """A decoding state of the static-slot engine was used after it was advanced, selected or admitted."""


def _rounded(slots: int) -> int:
    return SLOT_ROUNDING * math.ceil(max(slots, 1) / SLOT_ROUNDING)


class SlotArena:
    """Per-layer key/value buffers [R, H, S, D] (allocated on the first write of each layer, shaped
    like it), token ids [R, S] and lengths of the rows; physical rows [0, live) are in use.

    `copied_positions` counts token positions (per layer and for keys and values together) copied
    from one row to another, and `version` increases with every operation that consumes a state."""

    def __init__(self, device: torch.device, rows: int, slots: int):
        self.device = device
        self.capacity_rows, self.capacity_slots = max(int(rows), 1), _rounded(int(slots))
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self.ids = torch.zeros(self.capacity_rows, self.capacity_slots, dtype=torch.long, device=device)
        self.lengths = [0] * self.capacity_rows  # host copy: row layout decisions never wait for the device
        self.live = 0
        self.version = 0
        self.copied_positions = 0
        self.newest = None  # weak reference to the newest state of this arena (set by the engine)

    def reset(self) -> None:
        """Empty the arena for a new batch (buffers kept; states of the old batch become stale)."""
        self.lengths = [0] * self.capacity_rows
        self.live = 0
        self.version += 1
        self.newest = None

    # ---------------------------------------------------------------- storage
    def layer(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The buffers of layer `index`, allocated like `like` ([*, H, *, D]) on first use."""
        while len(self.layers) <= index:
            self.layers.append(None)
        if self.layers[index] is None:
            shape = (self.capacity_rows, like.shape[1], self.capacity_slots, like.shape[3])
            self.layers[index] = (like.new_zeros(shape), like.new_zeros(shape))  # never NaN: masked slots get weight 0, and 0 * NaN is NaN
        return self.layers[index]

    def ensure(self, rows: int, slots: int) -> None:
        """Grow the buffers to hold at least `rows` rows of `slots` slots (live rows are kept)."""
        if rows <= self.capacity_rows and slots <= self.capacity_slots:
            return
        new_rows = max(rows, self.capacity_rows if rows <= self.capacity_rows else int(1.5 * self.capacity_rows) + 1)
        new_slots = self.capacity_slots if slots <= self.capacity_slots else _rounded(max(slots, int(1.25 * self.capacity_slots)))
        used = max(self.lengths[: self.live], default=0)
        live = self.live

        def grown(old: torch.Tensor, *shape) -> torch.Tensor:
            new = old.new_zeros(shape)
            if old.dim() == 2:
                new[:live, :used] = old[:live, :used]
            else:
                new[:live, :, :used] = old[:live, :, :used]
            return new

        self.layers = [
            None if pair is None else tuple(grown(t, new_rows, t.shape[1], new_slots, t.shape[3]) for t in pair)
            for pair in self.layers
        ]
        self.ids = grown(self.ids, new_rows, new_slots)
        self.lengths += [0] * (new_rows - self.capacity_rows)
        self.capacity_rows, self.capacity_slots = new_rows, new_slots

    # ------------------------------------------------------------------ moves
    def copy_rows(self, sources: list[int], destinations: list[int]) -> None:
        """Copy physical rows `sources` onto `destinations` (no destination may be a source)."""
        if not sources:
            return
        width = max(self.lengths[s] for s in sources)
        src = torch.as_tensor(sources, dtype=torch.long, device=self.device)
        dst = torch.as_tensor(destinations, dtype=torch.long, device=self.device)
        for pair in self.layers:
            if pair is not None:
                for buffer in pair:
                    buffer[dst, :, :width] = buffer[src, :, :width]
        self.ids[dst, :width] = self.ids[src, :width]
        for s, d in zip(sources, destinations):
            self.lengths[d] = self.lengths[s]
        self.copied_positions += width * len(sources)

    def copy_from(self, other: "SlotArena", sources: list[int], first_row: int) -> None:
        """Rows `first_row + i` become copies of `other`'s physical rows `sources[i]`."""
        width = max(other.lengths[s] for s in sources)
        src = torch.as_tensor(sources, dtype=torch.long, device=other.device)
        rows = slice(first_row, first_row + len(sources))
        for index, pair in enumerate(other.layers):
            if pair is not None:
                for own, theirs in zip(self.layer(index, pair[0]), pair):
                    own[rows, :, :width] = theirs[src, :, :width]
        self.ids[rows, :width] = other.ids[src, :width]
        for i, s in enumerate(sources):
            self.lengths[first_row + i] = other.lengths[s]
        self.copied_positions += width * len(sources)

    def write_reused(self, plans: list[Reuse], first_row: int) -> None:
        """Rows `first_row + i` start with the `plans[i].length` reused slots of `plans[i].entry`."""
        for i, plan in enumerate(plans):
            row = first_row + i
            self.lengths[row] = plan.length
            if plan.length == 0:
                continue
            for index, (keys, values) in enumerate(plan.entry.kv):
                own_keys, own_values = self.layer(index, keys)
                own_keys[row, :, : plan.length] = keys[0, :, : plan.length]
                own_values[row, :, : plan.length] = values[0, :, : plan.length]
            self.ids[row, : plan.length] = plan.entry.tokens[: plan.length].to(self.device)
            self.copied_positions += plan.length

    def select(self, sources: list[int]) -> list[int]:
        """Make physical rows `sources` (repeats allowed) the live rows; returns the physical row of
        each.  A source inside the new live range stays where it is (its first occurrence); the
        others, and every repeat, are copied into the rows of the range that no kept row occupies."""
        count = len(sources)
        self.ensure(count, self.capacity_slots)
        destinations: list[int | None] = [None] * count
        claimed: set[int] = set()
        for j, source in enumerate(sources):
            if source < count and source not in claimed:
                destinations[j] = source
                claimed.add(source)
        free = iter(r for r in range(count) if r not in claimed)
        pending = [j for j in range(count) if destinations[j] is None]
        for j in pending:
            destinations[j] = next(free)
        self.copy_rows([sources[j] for j in pending], [destinations[j] for j in pending])
        self.live = count
        return destinations  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class SlotState:
    """Decoding state of the static-slot engine: next-token `logprobs` [B, V], `lengths` [B], and
    where the rows live: `rows[b]` is row b's physical row in `arena`, valid while the arena's
    version is still `version`."""

    logprobs: torch.Tensor
    lengths: torch.Tensor
    arena: SlotArena
    rows: tuple[int, ...]
    version: int

    def check(self) -> SlotArena:
        """The arena, after confirming this state has not been consumed."""
        if self.version != self.arena.version:
            raise StaleStateError(
                "this decoding state was already advanced, selected or admitted; the static-slot engine "
                "writes its keys and values in place, so continue from the newest state, or use "
                "HFLanguageModel(..., engine='dynamic') to branch from old states"
            )
        return self.arena


def visible_mask(offsets: torch.Tensor, queries: int, width: int, attention: str, dtype: torch.dtype) -> torch.Tensor:
    """The 4-D attention mask [B, 1, Q, width] for queries at positions `offsets[b] + q`: slot s is
    visible to it iff s <= offsets[b] + q.  Boolean for SDPA; additive (0 / dtype min) for eager."""
    positions = offsets[:, None] + torch.arange(queries, device=offsets.device)[None]
    visible = torch.arange(width, device=offsets.device)[None, None] <= positions[:, :, None]
    if attention == "eager":
        return torch.zeros(visible.shape, dtype=dtype, device=offsets.device).masked_fill_(~visible, torch.finfo(dtype).min)[:, None]
    return visible[:, None]


def slot_cache(arena: SlotArena, first: int, stop: int, write: tuple[torch.Tensor, torch.Tensor], width: int, layers: int):
    """A transformers `DynamicCache` whose layer i writes the new keys/values of physical rows
    `first..stop-1` into `arena` at (`write` = rows [n, 1], slots [n, Q]) in place and attends over
    the view `[first:stop, :, :width]` of its buffers."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layers.extend(slot_layer_class()(arena, index, first, stop, write, width) for index in range(layers))
    return cache


@functools.cache
def slot_layer_class():
    """`DynamicLayer` subclass writing into an arena (made on first use: transformers loads lazily)."""
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        def __init__(self, arena, index, first, stop, write, width):
            super().__init__()
            self.arena, self.index, self.first, self.stop, self.write, self.width = arena, index, first, stop, write, width

        def get_seq_length(self) -> int:  # what the attended view holds before this pass's tokens
            return self.width - self.write[1].shape[1]

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.width, 0

        def update(self, key_states, value_states, *args, **kwargs):
            keys, values = self.arena.layer(self.index, key_states)
            rows, slots = self.write
            keys[rows, :, slots] = key_states.transpose(1, 2)
            values[rows, :, slots] = value_states.transpose(1, 2)
            self.keys = keys[self.first : self.stop, :, : self.width]
            self.values = values[self.first : self.stop, :, : self.width]
            self.is_initialized = True
            return self.keys, self.values

    return SlotLayer


@functools.cache
def static_slots_supported() -> bool:
    """Whether the installed transformers has the per-layer cache objects the engine plugs into (>= 4.56)."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer  # noqa: F401
    except ImportError:
        return False
    return hasattr(DynamicCache(), "layers")
