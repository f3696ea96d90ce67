"""The length-capped support S_n of a small-vocabulary language model, and laws over it.

Token convention (shared with the sampler): a generated sequence is the tuple of generated token
ids, the prompt excluded, EOS included when emitted.  With a cap of `n` new tokens

    S_n = {x : x ends with an EOS token, |x| <= n, no earlier EOS}  U  {x : |x| = n, no EOS}.

Everything is conditioned on a fixed `prompt`.  Sequences of base probability zero are left out
of the enumeration: they have probability zero under every law over S_n.

`enumerate_support` expands the prefix tree breadth-first: all live prefixes of one length go
through the model in one batched `lm.start` call (chunked to bound memory), so supports of
~1e5 sequences take seconds on toy models.  It refuses (ValueError) supports larger than
`max_support`.  It returns the base law p(x) as an `ExactLaw`: the support, one log-probability
per sequence, and the base model's per-token log-probs, from which `mcmc_llm.lm.exact.laws` derives
the other laws without calling the model again.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from mcmc_llm.core.validate import integer
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch

DEFAULT_MAX_SUPPORT = 200_000
# Upper bound on the number of [row, token] log-prob entries held at once while expanding.
_MAX_ENTRIES_PER_CALL = 1 << 22

__all__ = ["DEFAULT_MAX_SUPPORT", "ExactLaw", "enumerate_support", "support_size_bound"]


# ----------------------------------------------------------------------------------------------
# validation helpers


def check_prompt(prompt: Sequence[int], vocab_size: int) -> tuple[int, ...]:
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    tokens = []
    for token in prompt:
        token = integer("prompt token", token, None)
        if not 0 <= token < vocab_size:
            raise ValueError(f"prompt token {token} is outside the vocabulary [0, {vocab_size})")
        tokens.append(token)
    return tuple(tokens)


def support_size_bound(vocab_size: int, num_eos: int, max_new_tokens: int) -> int:
    """|S_n| when every token has positive probability: sum_{t<=n} (V-E)^(t-1) E + (V-E)^n."""
    live = vocab_size - num_eos
    return sum(live ** (t - 1) * num_eos for t in range(1, max_new_tokens + 1)) + live**max_new_tokens


def _logsumexp(values: np.ndarray) -> float:
    if values.size == 0:
        return -math.inf
    top = float(np.max(values))
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.sum(np.exp(values - top))))


def _as_key(sequence: Any) -> tuple[int, ...]:
    if isinstance(sequence, torch.Tensor):
        sequence = sequence.tolist()
    return tuple(int(token) for token in sequence)


# ----------------------------------------------------------------------------------------------
# the law object


@dataclasses.dataclass(frozen=True, eq=False)
class ExactLaw:
    """A law over the enumerated support S_n of one (model, prompt, n).

    sequences: the support, each a tuple of generated token ids (EOS included when emitted), in
        lexicographic order (deterministic).
    log_probs: float64 numpy array [N], this law's log-probability of each sequence (normalised).
    tokens: int64 [N, n], the sequences right-padded with -1.
    lengths: int64 [N].
    token_log_probs: float64 [N, n], the BASE model's log p(x_t | prompt, x_<t), 0 past the end;
        every law derived from the same enumeration carries it, so laws can be re-derived
        without calling the model again.
    """

    sequences: list[tuple[int, ...]]
    log_probs: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    token_log_probs: np.ndarray
    max_new_tokens: int
    prompt: tuple[int, ...]
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    description: str = "base"

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def base_log_probs(self) -> np.ndarray:
        """log p(x) under the base model for every sequence [N]."""
        return self.token_log_probs.sum(axis=1)

    def probs(self) -> np.ndarray:
        """Probabilities [N] (normalised to sum to 1)."""
        return np.exp(self.log_probs - _logsumexp(self.log_probs))

    def as_dict(self) -> dict[tuple[int, ...], float]:
        """`{sequence: probability}`."""
        return dict(zip(self.sequences, self.probs().tolist()))

    @functools.cached_property
    def _index(self) -> dict[tuple[int, ...], int]:
        return {sequence: i for i, sequence in enumerate(self.sequences)}

    def prob(self, sequence: Sequence[int]) -> float:
        """Probability of one sequence (0 for sequences outside the enumerated support)."""
        index = self._index.get(_as_key(sequence))
        return 0.0 if index is None else float(self.probs()[index])

    def mass(self, predicate) -> float:
        """Total probability of the sequences for which `predicate(sequence)` is true."""
        probs = self.probs()
        return float(sum(probs[i] for i, sequence in enumerate(self.sequences) if predicate(sequence)))

    def tv(self, other: "ExactLaw | Mapping[Any, float] | Iterable[Sequence[int]]") -> float:
        """Total-variation distance to another law, a `{sequence: probability or count}` mapping
        (normalised by its total), or an iterable of sampled sequences (empirical law)."""
        if isinstance(other, ExactLaw):
            weights = other.as_dict()
        elif isinstance(other, Mapping):
            weights = {}
            for key, value in other.items():
                key = _as_key(key)
                weights[key] = weights.get(key, 0.0) + float(value)
        else:
            weights = dict(Counter(_as_key(sample) for sample in other))
        total = float(sum(weights.values()))
        if not total > 0 or any(value < 0 for value in weights.values()):
            raise ValueError("tv needs a non-empty law or sample with non-negative weights")
        mine = self.as_dict()
        distance = sum(abs(mine.get(key, 0.0) - weights.get(key, 0.0) / total) for key in set(mine) | set(weights))
        return 0.5 * distance

    def _with(self, log_probs: np.ndarray, description: str) -> "ExactLaw":
        log_probs = np.asarray(log_probs, dtype=np.float64)
        return dataclasses.replace(self, log_probs=log_probs - _logsumexp(log_probs), description=description)


# ----------------------------------------------------------------------------------------------
# enumeration


def _next_token_logprobs(lm: LanguageModel, prompt: tuple[int, ...], prefixes: np.ndarray) -> np.ndarray:
    """log p(. | prompt + prefix) [F, V] (float64, renormalised) for equal-length prefixes [F, t]."""
    rows, width = prefixes.shape
    ids = torch.empty(rows, max(len(prompt) + width, 1), dtype=torch.long)
    ids[:, : len(prompt)] = torch.as_tensor(prompt, dtype=torch.long)
    ids[:, len(prompt) : len(prompt) + width] = torch.from_numpy(prefixes)
    if len(prompt) + width == 0:
        ids.zero_()
    lengths = torch.full((rows,), len(prompt) + width, dtype=torch.long)
    state = lm.start(TokenBatch(ids.to(lm.device), lengths.to(lm.device)))
    logprobs = torch.as_tensor(state.logprobs).detach().to("cpu", torch.float64)
    if tuple(logprobs.shape) != (rows, lm.vocab_size):
        raise ValueError(f"next-token log-probs have shape {tuple(logprobs.shape)}; expected ({rows}, {lm.vocab_size})")
    if bool(torch.isnan(logprobs).any()):
        raise ValueError("the model returned NaN next-token log-probabilities")
    return torch.log_softmax(logprobs, dim=-1).numpy()


def enumerate_support(
    lm: LanguageModel,
    max_new_tokens: int,
    prompt: Sequence[int] = (),
    *,
    max_support: int = DEFAULT_MAX_SUPPORT,
) -> ExactLaw:
    """Enumerate S_n (sequences of positive base probability) with each sequence's base log p.

    Breadth-first: at each length t, all live prefixes (no EOS, length t < n) are scored in
    batched `lm.start` calls.  Raises ValueError, with the numbers, as soon as the support is
    known to exceed `max_support` sequences.
    """
    n = integer("max_new_tokens", max_new_tokens, 0)
    max_support = integer("max_support", max_support)
    vocab = lm.vocab_size
    prompt = check_prompt(prompt, vocab)
    eos = tuple(sorted(set(int(e) for e in lm.eos_token_ids)))
    is_eos = np.zeros(vocab, dtype=bool)
    is_eos[list(eos)] = True
    bound = support_size_bound(vocab, len(eos), n)
    guarded = bound > max_support

    frontier_tokens = np.zeros((1, 0), dtype=np.int64)
    frontier_lp = np.zeros((1, 0), dtype=np.float64)
    done_tokens: list[np.ndarray] = []
    done_lp: list[np.ndarray] = []
    done_lengths: list[np.ndarray] = []
    completed = 0
    if n == 0:
        done_tokens.append(frontier_tokens)
        done_lp.append(frontier_lp)
        done_lengths.append(np.zeros(1, dtype=np.int64))
        frontier_tokens = frontier_tokens[:0]

    def pad(array: np.ndarray, value) -> np.ndarray:
        return np.pad(array, ((0, 0), (0, n - array.shape[1])), constant_values=value)

    chunk = max(1, _MAX_ENTRIES_PER_CALL // vocab)
    for t in range(n):
        if frontier_tokens.shape[0] == 0:
            break
        live_tokens: list[np.ndarray] = []
        live_lp: list[np.ndarray] = []
        live = 0
        for begin in range(0, frontier_tokens.shape[0], chunk):
            prefixes = frontier_tokens[begin : begin + chunk]
            logprobs = _next_token_logprobs(lm, prompt, prefixes)
            rows, tokens = np.nonzero(np.isfinite(logprobs))  # row-major: sorted by (prefix, token)
            new_tokens = np.concatenate([prefixes[rows], tokens[:, None]], axis=1)
            new_lp = np.concatenate([frontier_lp[begin + rows], logprobs[rows, tokens][:, None]], axis=1)
            final = is_eos[tokens] | (t + 1 == n)
            if final.any():
                done_tokens.append(pad(new_tokens[final], -1))
                done_lp.append(pad(new_lp[final], 0.0))
                done_lengths.append(np.full(int(final.sum()), t + 1, dtype=np.int64))
                completed += int(final.sum())
            if (~final).any():
                live_tokens.append(new_tokens[~final])
                live_lp.append(new_lp[~final])
                live += int((~final).sum())
            # every live prefix, expanded or not, yields at least one sequence of S_n
            unexpanded = frontier_tokens.shape[0] - (begin + prefixes.shape[0])
            at_least = completed + live + unexpanded
            if guarded and at_least > max_support:
                raise ValueError(
                    f"the support S_{n} has more than max_support = {max_support} sequences: at least {at_least} "
                    f"found after expanding prefixes of length {t} (vocabulary {vocab} with {len(eos)} EOS id(s), "
                    f"prompt length {len(prompt)}; up to {bound} sequences in all); lower max_new_tokens or raise max_support"
                )
        frontier_tokens = np.concatenate(live_tokens) if live_tokens else np.zeros((0, t + 1), dtype=np.int64)
        frontier_lp = np.concatenate(live_lp) if live_lp else np.zeros((0, t + 1), dtype=np.float64)

    tokens = np.concatenate(done_tokens) if done_tokens else np.zeros((0, n), dtype=np.int64)
    token_lp = np.concatenate(done_lp) if done_lp else np.zeros((0, n), dtype=np.float64)
    lengths = np.concatenate(done_lengths) if done_lengths else np.zeros(0, dtype=np.int64)
    order = np.lexsort(tokens.T[::-1]) if n > 0 else np.arange(tokens.shape[0])
    tokens, token_lp, lengths = tokens[order], token_lp[order], lengths[order]
    sequences = [tuple(row[:length]) for row, length in zip(tokens.tolist(), lengths.tolist())]
    return ExactLaw(
        sequences=sequences,
        log_probs=token_lp.sum(axis=1),
        tokens=tokens,
        lengths=lengths,
        token_log_probs=token_lp,
        max_new_tokens=n,
        prompt=prompt,
        vocab_size=vocab,
        eos_token_ids=eos,
        description="base",
    )
