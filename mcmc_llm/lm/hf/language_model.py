"""A transformers causal LM as a `LanguageModel`: batched, KV-cached, with prompt-prefix reuse.

Layout of a batch (`mcmc_llm.lm.hf.layout`): row b of the KV cache holds `S` slots, a boolean mask
marks the real tokens, and explicit `position_ids` give the i-th real token position i, so masked
slots ("holes") change nothing but cost.

Prefix and sequence reuse (`mcmc_llm.lm.hf.reuse`).  `register_prefix(ids)` declares a prompt;
`start`/`positionwise` find, for each row, the longest registered prefix its context begins with,
encode that prefix once (kept in an LRU of `prefix_cache_size` entries together with its next-token
log-probs) and copy its keys and values into the row; only the remainder is pushed through the
model.  `retire(state, rows)` keeps finished rows in a second LRU, the stash, so a later context
sharing a prefix with one of them (a suffix-resampling proposal cut inside the current sequence)
copies the shared part too.  `counter.record_encoding` is called with the true absolute start
position of what is encoded, so reuse shows as fewer `tokens_encoded`.

Two decoding engines share this reuse and the forward pass (`engine=`), with the same log-probs
up to summation order, hence the same draws (`tests/lm/hf/test_static.py`, float64):
"static" (the default where supported; `hf.static`, `hf.slots`) writes key/value slots in place
and has linear states (a consumed state raises `StaleStateError`); "dynamic" (`hf.dynamic`, the
layout above) has immutable states, so a caller may branch from any state.

Supported: decoder-only models whose layers are all full attention (Llama, Qwen2/2.5, Mistral
without sliding window, Phi-3, SmolLM2, ...); sliding-window and linear attention are rejected.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch

from mcmc_llm.lm.chat_encoding import chat_prompt_ids
from mcmc_llm.lm.devices import resolve_device, resolve_dtype
from mcmc_llm.lm.hf.dynamic import DynamicEngine
from mcmc_llm.lm.hf.layout import HFState, cache_from_kv, check_full_attention, kv_from_cache, query_block, reused_slots
from mcmc_llm.lm.hf.reuse import Encoded, PrefixCache, Reuse, SequenceStash
from mcmc_llm.lm.hf.decode_step import FINISH_READ_INTERVAL
from mcmc_llm.lm.hf.slots import SlotState, static_slots_supported
from mcmc_llm.lm.hf.static import ATTENTION, StaticSlotEngine
from mcmc_llm.lm.hf.packed_linear import set_packed_linears
from mcmc_llm.lm.protocol import ComputeCounter, LanguageModel, TokenBatch
from mcmc_llm.lm.text import ids_from_text, text_from_ids

class HFLanguageModel(LanguageModel):
    """Wrap a transformers `AutoModelForCausalLM` (and optionally its tokenizer).

    model: a causal LM; put in eval mode.  tokenizer: optional; without one, `encode_prompt`
        accepts a list of ids or a whitespace-separated string of ids and `decode` joins ids.
    chat_template: `encode_prompt` wraps the text as one user turn with the tokenizer's chat
        template (when it has one) and the generation prompt.
    device / dtype: None keeps the model where and as it is; otherwise see `resolve_device` /
        `resolve_dtype` ("auto", "cpu", "cuda"; "auto", "float32", "bfloat16", "float16").
    eos_token_ids: override; by default `generation_config.eos_token_id` (int or list),
        `config.eos_token_id` and `tokenizer.eos_token_id`, deduplicated.
    prefix_cache_size: encoded prefixes kept (LRU).
    sequence_cache_size: retired rows kept for reuse (LRU; at least `STASH_PER_ROW` = 4 per row of
        the largest batch, so a chain on a long proposal keeps its sequence); 0 turns reuse off.
    score_chunk_elements: `positionwise` applies the LM head and `reduce` to chunks of positions
        holding at most this many `batch * positions * vocab` entries.
    engine: "static" (in-place key/value slots, linear states), "dynamic" (immutable states), or
        "auto": static when transformers has per-layer caches (>= 4.56) and the attention is SDPA
        or eager (it takes an explicit 4-D mask), else dynamic.
    packed_linear: "auto" / "on" / "off": float32 CPU linear layers on weights packed once for
        oneDNN (`mcmc_llm.lm.hf.packed_linear`; same products up to summation order), or not.
    graphs: the static engine's decoding step, "auto" / "off" / "eager" / "compiled" (`hf.decode_step`);
        "compiled" also reads finished rows every FINISH_READ_INTERVAL steps (`finish_read_interval`).
    """

    ENGINES = ("auto", "static", "dynamic")

    STASH_PER_ROW = 4

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        chat_template: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        eos_token_ids: Sequence[int] | None = None,
        prefix_cache_size: int = 32,
        sequence_cache_size: int = 16,
        score_chunk_elements: int = 2**24,
        engine: str = "auto",
        packed_linear: str = "auto",
        graphs: str = "auto",
        name: str | None = None,
    ):
        self.engine = engine  # validated by the setter
        if device is not None or dtype is not None:
            target = resolve_device(device) if device is not None else next(model.parameters()).device
            model = model.to(device=target, dtype=resolve_dtype(dtype, target) if dtype is not None else None)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.chat_template = bool(chat_template)
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.counter = ComputeCounter()
        self.prefix_cache_size = int(prefix_cache_size)
        self.sequence_cache_size = int(sequence_cache_size)
        self.score_chunk_elements = int(score_chunk_elements)
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        check_full_attention(config)
        self._config = config
        self._decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
        self.pack_linear(packed_linear)  # sets self._head
        parameters = inspect.signature(self._decoder.forward).parameters
        self._cache_keyword = "cache" if "cache" in parameters else "past_key_values"
        self.vocab_size = int(getattr(self._head, "out_features", None) or config.vocab_size)
        longest = getattr(config, "max_position_embeddings", None)
        self.max_context = int(longest) if isinstance(longest, int) and longest > 0 else None
        self.eos_token_ids = self._eos_ids(eos_token_ids)
        self._prefixes = PrefixCache()
        self._stash = SequenceStash()
        self._largest_batch = 0
        self.num_layers = int(config.num_hidden_layers)
        self._static = StaticSlotEngine(self)
        self.graphs = graphs
        self._dynamic = DynamicEngine(self)
        self._check_head()

    # ------------------------------------------------------------------ setup
    def _eos_ids(self, override: Sequence[int] | None) -> tuple[int, ...]:
        if override is not None:
            candidates = list(override)
        else:
            candidates = []
            for source in (getattr(self.model, "generation_config", None), self._config, self.tokenizer):
                value = getattr(source, "eos_token_id", None) if source is not None else None
                candidates += list(value) if isinstance(value, (list, tuple)) else [value]
        eos = tuple(dict.fromkeys(int(e) for e in candidates if e is not None and 0 <= int(e) < self.vocab_size))
        if not eos:
            raise ValueError(f"no EOS token id found for {self.name}; pass eos_token_ids=[...]")
        return eos

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's logits from final hidden states (LM head plus known output scalings)."""
        logits = self._head(hidden)
        config = self._config
        if getattr(config, "logits_scaling", None):  # Granite
            logits = logits / config.logits_scaling
        if getattr(config, "logit_scale", None):  # Cohere
            logits = logits * config.logit_scale
        cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self._logits(hidden)
        return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)

    @torch.no_grad()
    def _check_head(self) -> None:
        """Confirm that decoder + `_logits` reproduces the model's own logits (one tiny forward)."""
        ids = (torch.arange(3, device=self.device) % self.vocab_size)[None]
        expected = self.model(input_ids=ids).logits[0, -1].float()
        got = self._logits(self._decoder(input_ids=ids).last_hidden_state[:, -1])[0].float()
        if not torch.allclose(got, expected, atol=1e-3 * (1 + expected.abs().max().item()), rtol=1e-3):
            raise NotImplementedError(f"{type(self.model).__name__}: logits could not be reproduced from the decoder's hidden states")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def engine(self) -> str:
        """The decoding engine `start` uses: "auto", "static" or "dynamic" (see the class docstring)."""
        return self._engine_name

    @engine.setter
    def engine(self, value: str) -> None:
        if value not in self.ENGINES:
            raise ValueError(f"unknown engine {value!r}; choose one of {', '.join(self.ENGINES)}")
        self._engine_name = value

    @property
    def graphs(self) -> str:  # the static engine's decoding step: "off", "eager" or "compiled"
        return self._static.steps.mode

    @graphs.setter
    def graphs(self, mode: str) -> None:  # validated and resolved for the device by DecodeSteps
        self._static.use_graphs(mode)
        self.finish_read_interval = FINISH_READ_INTERVAL if self.graphs == "compiled" else 1

    def pack_linear(self, mode: str = "on") -> int:
        """Compute float32 CPU linear layers from oneDNN-packed weights ("on", "auto") or not ("off");
        sets and returns `packed_layers`, how many are packed (`mcmc_llm.lm.hf.packed_linear`)."""
        self.packed_layers = set_packed_linears(self.model, mode)
        self._head = self.model.get_output_embeddings()
        return self.packed_layers

    def _uses_static_slots(self) -> bool:
        """Whether `start` begins a static-slot batch (see `engine`)."""
        if self.engine == "dynamic":
            return False
        attention = getattr(self.model.config, "_attn_implementation", "sdpa")
        supported = static_slots_supported() and attention in ATTENTION
        if self.engine == "static" and not supported:
            raise NotImplementedError(
                f"engine='static' needs transformers >= 4.56 and attention in {ATTENTION}; this model uses "
                f"{attention!r}: use engine='dynamic' (or 'auto')"
            )
        return supported

    def reserve(self, rows: int, length: int) -> None:
        """Size the next static-slot batches for `rows` rows of up to `length` tokens."""
        self._static.reserve(rows, length)

    # --------------------------------------------------------------- prompts
    def encode_prompt(self, text: str | Sequence[int] | None) -> list[int]:
        """Token ids of a prompt (chat template applied when enabled and available).

        Without a tokenizer, `text` is token ids (`mcmc_llm.lm.text`).  The model needs at least
        one context token, so an empty prompt is an error."""
        if text is None:
            raise ValueError(f"a prompt is required for {self.name} (it needs at least one context token)")
        ids = self._encode(text)
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids {bad} are outside the vocabulary [0, {self.vocab_size})")
        if not ids:
            raise ValueError(f"prompt {text!r} encodes to no tokens; {self.name} needs at least one context token")
        return ids

    def _encode(self, text: str | Sequence[int]) -> list[int]:
        if not isinstance(text, str) or self.tokenizer is None:
            return ids_from_text(text, self.vocab_size, self.name)
        if self.chat_template and getattr(self.tokenizer, "chat_template", None):
            return chat_prompt_ids(self.tokenizer, text, "ours")
        return [int(t) for t in self.tokenizer(text).input_ids]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if self.tokenizer is None:
            return text_from_ids(ids)
        return self.tokenizer.decode(ids.tolist() if isinstance(ids, torch.Tensor) else list(ids))

    # --------------------------------------------------------------- prefixes
    def register_prefix(self, token_ids: Sequence[int]) -> None:
        """Declare a prompt whose keys/values `start` and `positionwise` may reuse."""
        ids = tuple(int(t) for t in token_ids)
        if not ids:
            return
        self._prefixes.register(ids)

    def clear_prefixes(self) -> None:
        """Forget registered prefixes and retired sequences (frees their keys and values)."""
        self._prefixes.clear()
        self._stash.clear()
        self._largest_batch = 0

    @torch.no_grad()
    def _prefix(self, ids: tuple[int, ...]) -> Encoded:
        """The encoding of registered prefix `ids`, made on first use."""
        entry = self._prefixes.get(ids)
        if entry is None:
            tokens = torch.as_tensor([ids], dtype=torch.long, device=self.device)
            hidden, kv = self._forward(tokens, torch.ones_like(tokens, dtype=torch.bool), None, ())
            self.counter.record_encoding(torch.zeros(1), torch.tensor([len(ids)]))
            entry = Encoded(tokens[0].cpu(), kv, self._logprobs(hidden[0, -1]))
            self._prefixes.put(ids, entry)
        return entry

    def _plan(self, rows: list[list[int]]) -> list[Reuse]:
        """Per row: which encoded sequence to copy and how much of it (the longer of the longest
        registered prefix and the best stashed sequence).  The prefix LRU keeps at least every
        prefix this batch uses, so a batch of more prompts than `prefix_cache_size` does not thrash."""
        if any(len(row) == 0 for row in rows):
            raise ValueError("HFLanguageModel needs at least one context token per row (start prompts with BOS)")
        self._largest_batch = max(self._largest_batch, len(rows))
        found = [self._prefixes.longest(row) if self._prefixes.registered else None for row in rows]
        entries = {ids: self._prefix(ids) for ids in dict.fromkeys(found) if ids}
        self._prefixes.trim(max(self.prefix_cache_size, len(entries)))
        plans = [Reuse(entries[ids], len(ids)) if ids else Reuse(None, 0) for ids in found]
        if self._stash:
            for b, row in enumerate(rows):
                stashed = self._stash.best(torch.as_tensor(row, dtype=torch.long))
                if stashed.length > plans[b].length:
                    plans[b] = stashed
        return plans

    @torch.no_grad()
    def retire(self, state: HFState | SlotState, rows: torch.Tensor) -> None:
        """Keep rows `rows` of `state` (tokens, keys/values, next-token log-probs) for reuse."""
        if self.sequence_cache_size <= 0:
            return
        for entry in self._engine(state).retired(state, rows):
            self._stash.add(entry)
        self._stash.trim(max(self.sequence_cache_size, self.STASH_PER_ROW * self._largest_batch))

    # ----------------------------------------------------------------- forward
    @torch.no_grad()
    def _forward(self, ids, query_mask, positions, kv, past_mask=None):
        """Run the decoder on `ids` [B, Q] after cached `kv` (a dynamic cache: prefixes, scoring and
        the dynamic engine); returns hidden [B, Q, H] and the new kv."""
        mask = query_mask if past_mask is None else torch.cat([past_mask, query_mask], dim=1)
        cache = cache_from_kv(kv)
        out = self._decoder(
            input_ids=ids, attention_mask=mask.long(), position_ids=positions, use_cache=True, **{self._cache_keyword: cache}
        )
        return out.last_hidden_state, kv_from_cache(cache)

    # ---------------------------------------------------------------- protocol
    def _engine(self, state) -> StaticSlotEngine | DynamicEngine:
        """The engine a state belongs to."""
        return self._static if isinstance(state, SlotState) else self._dynamic

    @torch.no_grad()
    def start(self, contexts: TokenBatch) -> HFState | SlotState:
        return (self._static if self._uses_static_slots() else self._dynamic).start(contexts)

    @torch.no_grad()
    def advance(self, state: HFState | SlotState, tokens: torch.Tensor) -> HFState | SlotState:
        return self._engine(state).advance(state, tokens)

    @torch.no_grad()
    def select_rows(self, state: HFState | SlotState, rows: torch.Tensor) -> HFState | SlotState:
        return self._engine(state).select_rows(state, rows)

    @torch.no_grad()
    def concat_rows(self, first: HFState | SlotState, second: HFState | SlotState) -> HFState | SlotState:
        """Rows of `first` then of `second` (two states of the same engine)."""
        if isinstance(first, SlotState) != isinstance(second, SlotState):
            raise TypeError("concat_rows cannot join a static-slot state with a dynamic one")
        return self._engine(first).concat_rows(first, second)

    @torch.no_grad()
    def admit(self, state: HFState | SlotState, tokens: torch.Tensor, contexts: TokenBatch) -> HFState | SlotState:
        """Advance `state` by `tokens` and add rows for `contexts`, in one forward pass when every new
        context needs exactly one token encoded (the rest is reused: a prompt, or the prefix `x_<m`
        of a retired sequence), which is the usual case for MH proposals."""
        return self._engine(state).admit(state, tokens, contexts)

    @torch.no_grad()
    def positionwise(
        self,
        contexts: TokenBatch,
        continuations: TokenBatch,
        reduce: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """One forward pass over (context remainder + continuation[:-1]) for every row, then the LM
        head and `reduce` over chunks of positions.  The output that predicts continuation token t
        of row b sits in column `len(remainder_b) - 1 + t` of its block."""
        out_device, batch, width = continuations.ids.device, len(continuations), continuations.ids.shape[1]
        cont_rows = continuations.to_lists()
        active = [b for b in range(batch) if cont_rows[b]]
        if not active:
            probe = reduce(torch.zeros(batch, 1, self.vocab_size, device=self.device), torch.zeros(batch, 1, dtype=torch.long, device=self.device))
            return {name: torch.zeros(batch, width, dtype=value.dtype, device=out_device) for name, value in probe.items()}
        all_contexts = contexts.to_lists()
        context_rows = [all_contexts[b] for b in active]
        cont_rows = [cont_rows[b] for b in active]
        plans = self._plan(context_rows)
        prefix_lengths = [plan.length for plan in plans]
        kv, past_mask, _ = reused_slots(plans, self.device)
        rests = [row[p:] for row, p in zip(context_rows, prefix_lengths)]
        blocks = [rest + cont[:-1] for rest, cont in zip(rests, cont_rows)]
        span = max(len(c) for c in cont_rows)
        hidden = None
        if any(blocks):
            block_width = max(len(b) for b in blocks)
            ids, query_mask, positions = query_block(blocks, prefix_lengths, block_width, self.device)
            hidden, _ = self._forward(ids, query_mask, positions, kv, past_mask)
            self.counter.record_encoding(torch.as_tensor(prefix_lengths), torch.as_tensor([len(b) for b in blocks]))
            first = torch.as_tensor([len(r) - 1 for r in rests], device=self.device)
            index = (first[:, None] + torch.arange(span, device=self.device)[None]).clamp(0, block_width - 1)
            hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        reused = [i for i, rest in enumerate(rests) if not rest]
        tokens = continuations.ids[active][:, :span].to(self.device)
        step = max(1, self.score_chunk_elements // (len(active) * self.vocab_size))
        columns: dict[str, list[torch.Tensor]] = {}
        for s in range(0, span, step):
            if hidden is not None:
                logprobs = self._logprobs(hidden[:, s : s + step])
            else:  # only position 0 of rows whose whole context is a reused prefix
                logprobs = torch.zeros(len(active), 1, self.vocab_size, device=self.device)
            if s == 0:
                for i in reused:
                    logprobs[i, 0] = plans[i].entry.logprobs
            for name, value in reduce(logprobs, tokens[:, s : s + step]).items():
                columns.setdefault(name, []).append(value)
        index = torch.as_tensor(active, device=out_device)
        inside = torch.arange(width, device=out_device)[None] < continuations.lengths.to(out_device)[:, None]
        result = {}
        for name, parts in columns.items():
            values = torch.cat(parts, dim=1).to(out_device)
            full = torch.zeros(batch, width, dtype=values.dtype, device=out_device)
            full[index, :span] = values
            result[name] = torch.where(inside, full, torch.zeros((), dtype=values.dtype, device=out_device))
        return result

