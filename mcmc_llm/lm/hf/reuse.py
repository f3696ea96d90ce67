"""Reuse of encoded token sequences by the transformers backend (`mcmc_llm.lm.hf`).

An `Encoded` sequence is a token sequence with its keys and values (per layer [1, H, n, D]) and
the next-token log-probs after its last token.  The backend keeps two stores of them and, for each
row it starts, copies the longest reusable part instead of pushing it through the model (a `Reuse`
plan: which entry, how many of its slots).

Prefix reuse (`PrefixCache`).  `register_prefix(ids)` declares a prompt; a row reuses the longest
registered prefix its context begins with.  Registered prefixes live in a token trie (matching costs
O(prefix length) per row); their encodings, made on first use, in an LRU whose size the backend
bounds with `trim` (`prefix_cache_size`, but never below the number of prefixes one batch uses).

Sequence reuse (`SequenceStash`).  `retire(state, rows)` (called by the generation path for every
row that finishes) keeps those rows' encodings in a second LRU, the stash, of at least
`sequence_cache_size` entries and at least `STASH_PER_ROW` (4) per row of the largest batch
started.  A later context that shares a prefix with a stashed sequence copies the shared part (all
but the context's last token when the context is a strict prefix, whose next-token log-probs the
stash does not hold).  This is what makes a suffix-resampling proposal cut at `m` cost only its
new tokens: the current sequence `x` was retired when it was generated, and `x_<m` is a prefix of
it.  Whether the previous proposal was accepted or rejected does not matter: both sequences were
retired.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import torch

_END = -1  # trie key marking the end of a registered prefix


@dataclasses.dataclass(frozen=True)
class Encoded:
    """An encoded token sequence kept for reuse: a registered prefix or a retired row."""

    tokens: torch.Tensor  # [n] on the CPU
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer [1, H, n, D]
    logprobs: torch.Tensor  # [V]: log p(. | tokens)


@dataclasses.dataclass(frozen=True)
class Reuse:
    """Row plan: copy the first `length` slots of `entry` (None: encode the whole context)."""

    entry: Encoded | None
    length: int


class PrefixCache:
    """Registered prefixes (a token trie) and an LRU of their encodings, keyed by the token tuple.
    `len()` is the number of encodings held."""

    def __init__(self):
        self._trie: dict = {}
        self._entries: collections.OrderedDict[tuple[int, ...], Encoded] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def registered(self) -> bool:
        """Whether any prefix is registered."""
        return bool(self._trie)

    def register(self, ids: tuple[int, ...]) -> None:
        node = self._trie
        for token in ids:
            node = node.setdefault(token, {})
        node[_END] = ids

    def longest(self, row: Sequence[int]) -> tuple[int, ...] | None:
        """The longest registered prefix that `row` begins with (None if there is none)."""
        node, found = self._trie, None
        for token in row:
            node = node.get(token)
            if node is None:
                break
            found = node.get(_END, found)
        return found

    def get(self, ids: tuple[int, ...]) -> Encoded | None:
        """The encoding of prefix `ids` (marked most recently used), or None if it is not held."""
        entry = self._entries.get(ids)
        if entry is not None:
            self._entries.move_to_end(ids)
        return entry

    def put(self, ids: tuple[int, ...], entry: Encoded) -> None:
        self._entries[ids] = entry
        self._entries.move_to_end(ids)

    def trim(self, capacity: int) -> None:
        """Drop the least recently used encodings until at most `capacity` are held."""
        while len(self._entries) > capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._trie.clear()
        self._entries.clear()


class SequenceStash:
    """Retired sequences in an LRU keyed by their tokens, with a padded index of all of them for
    the longest-shared-prefix lookup.  `len()` is the number of sequences held."""

    def __init__(self):
        self._entries: collections.OrderedDict[tuple[int, ...], Encoded] = collections.OrderedDict()
        self._index: tuple[list, torch.Tensor, torch.Tensor] | None = None  # keys, tokens [E, W] (-1 pad), lengths

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Encoded) -> None:
        """Keep `entry` (most recently used; replaces a stashed sequence with the same tokens)."""
        key = tuple(entry.tokens.tolist())
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self._index = None

    def trim(self, capacity: int) -> None:
        """Drop the least recently used sequences until at most `capacity` are held."""
        while len(self._entries) > capacity:
            self._entries.popitem(last=False)
            self._index = None

    def clear(self) -> None:
        self._entries.clear()
        self._index = None

    def best(self, row: torch.Tensor) -> Reuse:
        """The retired sequence sharing the longest prefix with context `row` (at most all but its
        last token, unless the whole stashed sequence equals the context)."""
        if self._index is None:  # one padded matrix of every stashed sequence, rebuilt after changes
            keys = list(self._entries)
            lengths = torch.as_tensor([len(key) for key in keys], dtype=torch.long)
            tokens = torch.full((len(keys), int(lengths.max())), -1, dtype=torch.long)
            for i, key in enumerate(keys):
                tokens[i, : len(key)] = self._entries[key].tokens
            self._index = (keys, tokens, lengths)
        keys, tokens, lengths = self._index
        n = min(tokens.shape[1], len(row))
        shared = (tokens[:, :n] == row[None, :n]).cumprod(dim=1).sum(dim=1)  # padding (-1) never matches
        shared = shared - ((shared == len(row)) & (lengths != len(row))).long()  # no log p(. | row) stashed
        best = int(shared.argmax())
        if int(shared[best]) <= 0:
            return Reuse(None, 0)
        self._entries.move_to_end(keys[best])
        return Reuse(self._entries[keys[best]], int(shared[best]))
