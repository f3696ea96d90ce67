"""The static-shape decoding step of the static-slot engine, and its compiled or graph-captured forms.

One decoding step pushes one token per row through the decoder.  `DecodeStep` does it on a fixed
shape: the first `bucket` physical rows of a `SlotArena` and all of its `S` token slots.  Row r
writes its token's keys and values at slot `positions[r]` and attends to the slots
`s <= positions[r]` (`hf.slots.visible_mask`), so the step computes what the variable-width step
computes (slots beyond a row's length get attention weight exactly 0), with

* every shape fixed by (bucket, S): the row count is rounded up to a bucket (`bucket_rows`), the
  rows beyond the live ones are padding (token 0 at slot 0 of rows no state uses), and the width
  is the arena's whole slot capacity;
* every input a device tensor written in place before the call (`tokens`, `positions`), and the
  keys, values and token ids updated in place by the call;
* no host read, no Python branch on a tensor value and no allocation that depends on the data.

So the step can be compiled whole (`torch.compile(fullgraph=True)`: a graph break is an error)
and, on CUDA, captured as one CUDA graph per bucket (`mode="reduce-overhead"`), replayed with one
launch instead of hundreds of kernel launches from the host.

Modes (`HFLanguageModel(graphs=...)`, `[model] graphs` in a run config):

* "off": the variable-width eager step (`StaticSlotEngine._forward`); the reference in parity tests;
* "eager": this static-shape step, not compiled (for testing the shapes and the bucketing);
* "compiled": compiled with `fullgraph=True` (on CUDA with CUDA graphs);
* "auto": "compiled" on CUDA, "off" elsewhere (compiling costs tens of seconds per bucket on a
  CPU and gains little there).

A compiled step is specialised to its bucket and to the arena's buffers: a new bucket or a grown
arena compiles (and on CUDA captures) again; `DecodeSteps.capture_seconds` records what each took.
"""

from __future__ import annotations

import time

import torch

from mcmc_llm.lm.hf.slots import SlotArena, slot_layer_class, visible_mask

GRAPH_MODES = ("auto", "off", "eager", "compiled")
BUCKETS = (8, 16, 32, 64, 128, 256, 512)
FINISH_READ_INTERVAL = 8  # with compiled steps, the host reads which rows are done every 8 steps (`ContinuousBatch`)


def bucket_rows(rows: int) -> int:
    """The smallest bucket holding `rows` rows (beyond the largest, the next multiple of it)."""
    if rows < 1:
        raise ValueError(f"a decoding step needs at least one row, got {rows}")
    largest = BUCKETS[-1]
    return next((b for b in BUCKETS if b >= rows), largest * -(-rows // largest))


def resolve_graph_mode(mode: str, device: torch.device) -> str:
    """`mode` with "auto" decided for `device` ("compiled" on CUDA, "off" elsewhere)."""
    if mode not in GRAPH_MODES:
        raise ValueError(f"graphs must be one of {GRAPH_MODES}, got {mode!r}")
    if mode == "auto":
        return "compiled" if torch.device(device).type == "cuda" else "off"
    return mode


class _ArenaBuffers:
    """The per-layer (keys, values) a step function receives as arguments, looked up as an arena's."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]]):
        self.layers = layers

    def layer(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layers[index]


def step_function(lm):
    """The static-shape step of `lm` as a function of tensors only,
    `step(tokens, positions, rows, ids, k_0, v_0, k_1, v_1, ...) -> log-probs [bucket, V]`: row r of
    `rows` takes `tokens[r]` at slot `positions[r]` of the arena buffers `ids` [R, S] and `k_i`,
    `v_i` [R, H, S, D] (written in place) and attends to its slots `s <= positions[r]`.  One
    function per model, so one compilation serves every arena and bucket (guards on shapes)."""
    from transformers import DynamicCache

    layer_class = slot_layer_class()  # made here, outside any compiled call
    attention = getattr(lm.model.config, "_attn_implementation", "sdpa")
    num_layers = lm.num_layers

    def step(tokens, positions, rows, ids, *kv):
        bucket, slots = tokens.shape[0], ids.shape[1]
        buffers = _ArenaBuffers([(kv[2 * i], kv[2 * i + 1]) for i in range(num_layers)])
        cache = DynamicCache()
        write = (rows[:, None], positions[:, None])
        cache.layers.extend(layer_class(buffers, i, 0, bucket, write, slots) for i in range(num_layers))
        mask = visible_mask(positions, 1, slots, attention, lm.dtype)
        out = lm._decoder(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None], use_cache=True,
                          **{lm._cache_keyword: cache})
        ids[rows, positions] = tokens
        return lm._logprobs(out.last_hidden_state[:, -1])

    return step


class DecodeStep:
    """The static-shape step over rows [0, bucket) of `arena` (see the module docstring): its input
    buffers and the arena's, handed to the model's step `function`.  Call `run(count, tokens,
    positions)`: rows [0, count) take `tokens[r]` at slot `positions[r]`; returns their next-token
    log-probs [count, V]."""

    def __init__(self, function, arena: SlotArena, bucket: int, compiled: bool):
        self.function, self.arena, self.bucket, self.compiled = function, arena, bucket, compiled
        device = arena.device
        self.tokens = torch.zeros(bucket, dtype=torch.long, device=device)
        self.positions = torch.zeros(bucket, dtype=torch.long, device=device)
        self.rows = torch.arange(bucket, device=device)
        self.buffers = (arena.ids,) + tuple(buffer for pair in arena.layers for buffer in pair)
        if compiled and device.type == "cuda":  # a captured graph reads and writes these addresses in place
            for tensor in (self.tokens, self.positions, self.rows) + self.buffers:
                torch._dynamo.mark_static_address(tensor)

    def run(self, count: int, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rows [0, count) take `tokens` at `positions` (device tensors of length `count`); the
        padding rows [count, bucket) write token 0 at their slot 0, so they must be rows no state
        uses (the caller steps every live row: `count` is the arena's `live`)."""
        self.tokens.zero_()
        self.positions.zero_()
        self.tokens[:count] = tokens
        self.positions[:count] = positions
        self.positions.clamp_(max=self.arena.capacity_slots - 1)  # a row at its cap never writes past the arena
        out = self.function(self.tokens, self.positions, self.rows, *self.buffers)
        return out[:count].clone() if self.compiled else out[:count]


class DecodeSteps:
    """The decode steps of one model: one per (arena, its capacity, bucket), made on first use.
    `capture_seconds[(bucket, slots)]` is the time of each step's first call (compilation and, on
    CUDA, graph capture included)."""

    def __init__(self, lm, mode: str):
        self.lm, self.mode = lm, resolve_graph_mode(mode, lm.device)
        self._steps: dict[tuple, DecodeStep] = {}
        self.capture_seconds: dict[tuple[int, int], float] = {}
        self._function = None  # the model's step function (compiled in "compiled" mode), made on first use

    def _step_function(self):
        if self._function is None:
            function = step_function(self.lm)
            if self.mode == "compiled":
                mode = "reduce-overhead" if self.lm.device.type == "cuda" else None
                function = torch.compile(function, fullgraph=True, mode=mode)
            self._function = function
        return self._function

    def serves(self, arena: SlotArena) -> bool:
        """Whether steps on `arena` take the static-shape path: a mode other than "off", and every
        layer's buffers allocated (the first forward pass of a batch allocates them)."""
        return self.mode != "off" and len(arena.layers) == self.lm.num_layers and all(p is not None for p in arena.layers)

    def run(self, arena: SlotArena, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One step of every live row of `arena` (physical rows [0, live), `live == len(tokens)`)."""
        count = len(tokens)
        if count != arena.live:
            raise ValueError(f"a static-shape step advances every live row: got {count} tokens for {arena.live} live rows")
        bucket = bucket_rows(count)
        arena.ensure(bucket, arena.capacity_slots)
        layers = tuple(id(pair[0]) if pair is not None else None for pair in arena.layers)
        key = (id(arena), layers, arena.capacity_rows, arena.capacity_slots, bucket)
        step = self._steps.get(key)
        if step is None:
            self._steps = {k: s for k, s in self._steps.items() if k[0] == id(arena) and k[1] == layers}  # old arenas' steps go
            step = self._steps[key] = DecodeStep(self._step_function(), arena, bucket, compiled=self.mode == "compiled")
            started = time.perf_counter()
            out = step.run(count, tokens, positions)
            if arena.device.type == "cuda":
                torch.cuda.synchronize(arena.device)
            self.capture_seconds[(bucket, arena.capacity_slots)] = time.perf_counter() - started
            return out
        return step.run(count, tokens, positions)


__all__ = ["BUCKETS", "FINISH_READ_INTERVAL", "DecodeStep", "DecodeSteps", "GRAPH_MODES", "bucket_rows", "resolve_graph_mode"]
