"""The language-model protocol every backend implements.

A backend exposes batched next-token log-probabilities with incremental decoding:

    state = lm.start(contexts)          # contexts: TokenBatch of B token sequences
    state.logprobs                      # [B, V]: log p(next token | context_b)
    state = lm.advance(state, tokens)   # append one token (LongTensor [B]) to every row

Continuous batching (serving many generation requests from one batch that is refilled as rows
finish) uses two more calls: `lm.concat_rows(first, second)` stacks the rows of two states, and
`lm.admit(state, tokens, contexts)` advances the rows of `state` by `tokens` and appends new rows
started from `contexts`; its default is `concat_rows(advance(state, tokens), start(contexts))`, and a
backend may do both in one forward pass (the transformers backend does).

And `lm.positionwise(contexts, continuations, reduce)`, which applies `reduce` to the
next-token log-probabilities at every position of given continuations (scoring).  The default
implementation steps through `start`/`advance`; backends that can do it in one forward pass
(transformers) override it.

Work is counted by each backend's `ComputeCounter` (`lm.counter`); `spent(before, after)` is the
work between two of its snapshots.

Prompts and completions as text: `lm.encode_prompt(text) -> ids` and `lm.decode(ids) -> text`
(default: the tokenizer-free convention of `mcmc_llm.lm.text`; the transformers backend uses its
tokenizer).

`StatelessLM` turns any function `next_token_logprobs(TokenBatch) -> [B, V]` into a backend,
and `CallableLM` wraps a plain Python callable mapping a list of prefixes (lists of ints) to
next-token log-probabilities (or logits: rows are renormalised with log_softmax).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import torch

from mcmc_llm.core.validate import integer
from mcmc_llm.lm.text import ids_from_text, text_from_ids


@dataclasses.dataclass(frozen=True)
class TokenBatch:
    """B right-padded token sequences: `ids` [B, W] (padding is 0) and `lengths` [B]."""

    ids: torch.Tensor
    lengths: torch.Tensor

    @staticmethod
    def from_lists(sequences: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> "TokenBatch":
        width = max((len(s) for s in sequences), default=0)
        ids = torch.zeros(len(sequences), max(width, 1), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            if len(sequence):
                ids[row, : len(sequence)] = torch.as_tensor(list(sequence), dtype=torch.long)
        lengths = torch.as_tensor([len(s) for s in sequences], dtype=torch.long)
        return TokenBatch(ids.to(device), lengths.to(device))

    def to_lists(self) -> list[list[int]]:
        ids, lengths = self.ids.cpu(), self.lengths.cpu()
        return [ids[row, : int(lengths[row])].tolist() for row in range(ids.shape[0])]

    def __len__(self) -> int:
        return self.ids.shape[0]

    def concat(self, other: "TokenBatch") -> "TokenBatch":
        """Row-wise concatenation `self[b] + other[b]`, right-padded."""
        width = int((self.lengths + other.lengths).max()) if len(self) else 0
        ids = torch.zeros(len(self), max(width, self.ids.shape[1], 1), dtype=torch.long, device=self.ids.device)
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        own = positions < self.lengths[:, None]
        ids[:, : self.ids.shape[1]] = torch.where(own[:, : self.ids.shape[1]], self.ids, 0)
        offset = positions - self.lengths[:, None]
        from_other = (offset >= 0) & (offset < other.lengths[:, None])
        gathered = other.ids.gather(1, offset.clamp(0, other.ids.shape[1] - 1))
        ids = torch.where(from_other, gathered, ids)
        return TokenBatch(ids, self.lengths + other.lengths)


@dataclasses.dataclass
class ComputeCounter:
    """Work done by a backend since the counter was last reset.

    tokens_sampled: tokens drawn by `sample_continuations` (and `ContinuousBatch`) for requests
        whose result was used.
    tokens_discarded: tokens drawn for requests that were withdrawn or whose result was thrown
        away (pre-fetched proposals of a branch the chain did not take); not in `tokens_sampled`.
    tokens_rejected_early: tokens of proposals stopped by an early-rejection rule (exact: their
        move was already rejected); a part of `tokens_sampled`.
    tokens_encoded: token positions pushed through the model (prefill, re-encoding, decoding) for
        rows still running; pushes of rows already finished but not yet read back by the host
        (`ContinuousBatch(read_every=k)`) are in `tokens_overrun` instead.
    forward_passes: model calls.
    attention_positions: sum over encoded tokens of the number of positions each attends to
        (a token at absolute position i attends to i + 1 positions); the attention cost proxy.
    tokens_overrun: token positions pushed for rows after they finished, before the host read
        their end (at most k - 1 per row with finish reads every k steps; 0 with k = 1).
    """

    tokens_sampled: int = 0
    tokens_discarded: int = 0
    tokens_rejected_early: int = 0
    tokens_encoded: int = 0
    forward_passes: int = 0
    attention_positions: int = 0
    tokens_overrun: int = 0

    def record_encoding(self, start_positions: torch.Tensor, num_tokens: torch.Tensor) -> None:
        """Account one forward pass encoding `num_tokens[b]` tokens at positions from `start_positions[b]`."""
        start = start_positions.to(torch.float64)
        count = num_tokens.to(torch.float64)
        self.forward_passes += 1
        self.tokens_encoded += int(count.sum())
        # sum_{i=start}^{start+count-1} (i + 1)
        self.attention_positions += int((count * (2 * start + count + 1) / 2).sum())

    def record_overrun(self, start_positions: torch.Tensor, num_tokens: torch.Tensor) -> None:
        """Move `num_tokens[b]` pushes at positions from `start_positions[b]`, already recorded by
        `record_encoding`, to `tokens_overrun`: they were made for rows that had finished."""
        start = start_positions.to(torch.float64)
        count = num_tokens.to(torch.float64)
        overrun = int(count.sum())
        self.tokens_encoded -= overrun
        self.tokens_overrun += overrun
        self.attention_positions -= int((count * (2 * start + count + 1) / 2).sum())

    def discard(self, tokens: int, rejected_early: bool = False) -> None:
        """Move `tokens` already counted as sampled to `tokens_discarded` (their result was not used;
        `rejected_early`: they were also counted in `tokens_rejected_early`, which keeps only used ones)."""
        self.tokens_sampled -= int(tokens)
        self.tokens_discarded += int(tokens)
        self.tokens_rejected_early -= int(tokens) if rejected_early else 0

    def snapshot(self) -> dict[str, int]:
        """The counters now, `{name: value}`; `spent(before, after)` of two snapshots is the work between them."""
        return dataclasses.asdict(self)

    def reset(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)


def spent(before: dict[str, int], after: dict[str, int], prefix: str = "") -> dict[str, int]:
    """The work done between two `ComputeCounter.snapshot()`s: `after - before` for every counter, in
    the counters' order, each name prefixed by `prefix` (e.g. "reference_" for a second LM's counter)."""
    return {prefix + key: value - before[key] for key, value in after.items()}


class LanguageModel(ABC):
    """Batched autoregressive LM over token ids `0..vocab_size-1` with EOS ids `eos_token_ids`."""

    vocab_size: int
    eos_token_ids: tuple[int, ...]
    counter: ComputeCounter
    #: The longest context (prompt + generated tokens) the model handles; None: no limit (toy LMs).
    max_context: int | None = None
    #: Decoding steps between the host's reads of which rows are done (`ContinuousBatch`); 1: every step.
    finish_read_interval: int = 1

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def encode_prompt(self, text: str | Sequence[int] | None) -> list[int]:
        """Token ids of a prompt.  Default, for models without a tokenizer (`mcmc_llm.lm.text`): the
        prompt is token ids, as a sequence or a string of whitespace-separated ids; None is empty."""
        return ids_from_text(text, self.vocab_size, getattr(self, "name", type(self).__name__))

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text of generated tokens.  Default, for models without a tokenizer: ids joined by spaces."""
        return text_from_ids(ids)

    @abstractmethod
    def start(self, contexts: TokenBatch) -> Any:
        """Encode `contexts`; the returned state has `.logprobs` [B, V] for the next token."""

    @abstractmethod
    def advance(self, state: Any, tokens: torch.Tensor) -> Any:
        """Append `tokens[b]` to row b and return the state with the new `.logprobs`."""

    def select_rows(self, state: Any, rows: torch.Tensor) -> Any:
        """Keep only rows `rows` of a decoding state (used to drop finished rows)."""
        raise NotImplementedError

    def concat_rows(self, first: Any, second: Any) -> Any:
        """A state holding the rows of `first` followed by those of `second` (continuous batching)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot join decoding states, which continuous batching needs; "
            "implement concat_rows or run the power sampler with batching='lockstep'"
        )

    def admit(self, state: Any, tokens: torch.Tensor, contexts: TokenBatch) -> Any:
        """Append `tokens[b]` to row b of `state`, then add one row per context of `contexts` after them.

        Equals `concat_rows(advance(state, tokens), start(contexts))`; a backend may override it to
        push the new contexts through the same forward pass as the appended tokens."""
        return self.concat_rows(self.advance(state, tokens), self.start(contexts))

    def reserve(self, rows: int, length: int) -> None:
        """A hint: batches of up to `rows` rows of up to `length` tokens (context and continuation)
        are coming.  A backend with preallocated storage sizes it now (the HF backend's static
        slots); by default nothing happens.  Never changes results."""

    def retire(self, state: Any, rows: torch.Tensor) -> None:
        """Rows `rows` of `state` are finished.  A backend may keep their encoding so that a later
        context extending any prefix of them is not re-encoded (the HF backend does); by default
        nothing is kept.  Retiring never changes what `start` returns, only what it costs."""

    def positionwise(
        self,
        contexts: TokenBatch,
        continuations: TokenBatch,
        reduce: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Apply `reduce(logprobs [B, w, V], tokens [B, w]) -> {name: [B, w]}` to every position of
        the continuations, where `logprobs[b, t]` is `log p(. | context_b + continuation_b[:t])`.
        Returns `{name: [B, W]}` with W = continuations.ids.shape[1]; entries past a row's length are 0."""
        width = continuations.ids.shape[1]
        state = self.start(contexts)
        columns: dict[str, list[torch.Tensor]] = {}
        for t in range(width):
            tokens = continuations.ids[:, t]
            for name, value in reduce(state.logprobs[:, None, :], tokens[:, None]).items():
                columns.setdefault(name, []).append(value[:, 0])
            if t + 1 < width:
                state = self.advance(state, tokens)
        inside = torch.arange(width, device=continuations.ids.device)[None] < continuations.lengths[:, None]
        return {name: torch.where(inside, torch.stack(cols, 1), 0) for name, cols in columns.items()}


@dataclasses.dataclass
class _ContextState:
    contexts: TokenBatch
    logprobs: torch.Tensor


class StatelessLM(LanguageModel):
    """A backend defined by `next_token_logprobs(contexts) -> [B, V]`, recomputed from the whole
    context at every step (exact toy models, user callables).  Compute is counted as an ideal
    KV-cached transformer would spend it: each appended token is encoded once."""

    def __init__(self, vocab_size: int, eos_token_ids: Sequence[int]):
        vocab_size = integer("vocab_size", vocab_size, 2)
        eos = tuple(int(e) for e in eos_token_ids)
        if not eos or any(e < 0 or e >= vocab_size for e in eos):
            raise ValueError(f"eos_token_ids must be a non-empty set of ids in [0, {vocab_size}), got {list(eos_token_ids)}")
        self.vocab_size = vocab_size
        self.eos_token_ids = eos
        self.counter = ComputeCounter()

    @abstractmethod
    def next_token_logprobs(self, contexts: TokenBatch) -> torch.Tensor:
        """`log p(. | context_b)` for every row, [B, V]."""

    def _checked(self, contexts: TokenBatch) -> torch.Tensor:
        logprobs = torch.log_softmax(torch.as_tensor(self.next_token_logprobs(contexts)).to(torch.float64), dim=-1)
        if logprobs.shape != (len(contexts), self.vocab_size):
            raise ValueError(
                f"next-token log-probs have shape {tuple(logprobs.shape)}; expected ({len(contexts)}, {self.vocab_size})"
            )
        return logprobs

    def start(self, contexts: TokenBatch) -> _ContextState:
        self.counter.record_encoding(torch.zeros_like(contexts.lengths), contexts.lengths)
        return _ContextState(contexts, self._checked(contexts))

    def advance(self, state: _ContextState, tokens: torch.Tensor) -> _ContextState:
        step = TokenBatch(tokens[:, None].to(state.contexts.ids.device), torch.ones_like(state.contexts.lengths))
        self.counter.record_encoding(state.contexts.lengths, step.lengths)
        contexts = state.contexts.concat(step)
        return _ContextState(contexts, self._checked(contexts))

    def select_rows(self, state: _ContextState, rows: torch.Tensor) -> _ContextState:
        contexts = TokenBatch(state.contexts.ids[rows], state.contexts.lengths[rows])
        return _ContextState(contexts, state.logprobs[rows])

    def concat_rows(self, first: _ContextState, second: _ContextState) -> _ContextState:
        width = max(first.contexts.ids.shape[1], second.contexts.ids.shape[1])
        pad = lambda ids: torch.nn.functional.pad(ids, (0, width - ids.shape[1]))  # noqa: E731 - right padding is 0
        contexts = TokenBatch(
            torch.cat([pad(first.contexts.ids), pad(second.contexts.ids)]),
            torch.cat([first.contexts.lengths, second.contexts.lengths]),
        )
        return _ContextState(contexts, torch.cat([first.logprobs, second.logprobs]))


class CallableLM(StatelessLM):
    """Wrap `fn(prefixes: list[list[int]]) -> [B, V]` (log-probs or logits) as a backend.

    >>> lm = CallableLM(lambda prefixes: torch.zeros(len(prefixes), 3), vocab_size=3, eos_token_ids=[2])
    """

    def __init__(self, fn: Callable[[list[list[int]]], Any], vocab_size: int, eos_token_ids: Sequence[int]):
        super().__init__(vocab_size, eos_token_ids)
        if not callable(fn):
            raise TypeError(f"CallableLM needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def next_token_logprobs(self, contexts: TokenBatch) -> torch.Tensor:
        return torch.as_tensor(self.fn(contexts.to_lists()))
