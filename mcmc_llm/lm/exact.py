"""Exact laws over the length-capped support S_n of a small-vocabulary language model.

Token convention (shared with the sampler): a generated sequence is the tuple of generated token
ids, the prompt excluded, EOS included when emitted.  With a cap of `n` new tokens

    S_n = {x : x ends with an EOS token, |x| <= n, no earlier EOS}  U  {x : |x| = n, no EOS}.

Every law is conditioned on a fixed `prompt`.  Sequences of base probability zero are left out
of the enumeration: they have probability zero under every law below.

* `base_law`:      p(x) = prod_t p(x_t | prompt, x_<t), which sums to 1 on S_n.
* `power_law`:     pi_alpha(x) = p(x)^alpha / sum_{y in S_n} p(y)^alpha.
* `nested_law`:    prod_k pi(block_k | earlier blocks), pi(c | h) = p(c | h)^alpha / sum_c' p(c' | h)^alpha,
                   where c ranges over the completions of block k after the boundary prefix h
                   (up to `cap_k` tokens ending with EOS, or exactly `cap_k` tokens without EOS,
                   cap_k = min(B, n - (k-1)B)); blocks after an EOS are empty (factor 1).  This is
                   the law that the uniform-within-block kernel reaches as N_MCMC -> inf per stage.
* `tempered_law`:  prod_t p(x_t | x_<t)^(1/tau) / sum_v p(v | x_<t)^(1/tau), plain autoregressive
                   sampling at temperature tau (the "low-temperature" sampler).  It equals the
                   nested law with block size 1 and alpha = 1/tau.

`enumerate_support` expands the prefix tree breadth-first: all live prefixes of one length go
through the model in one batched `lm.start` call (chunked to bound memory), so supports of
~1e5 sequences take seconds on toy models.  It refuses (ValueError) supports larger than
`max_support`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from mcmc_llm.lm.protocol import LanguageModel, TokenBatch

DEFAULT_MAX_SUPPORT = 200_000
# Upper bound on the number of [row, token] log-prob entries held at once while expanding.
_MAX_ENTRIES_PER_CALL = 1 << 22

__all__ = [
    "DEFAULT_MAX_SUPPORT",
    "ExactLaw",
    "base_law",
    "enumerate_support",
    "nested_law",
    "power_law",
    "sample_exact",
    "support_size_bound",
    "tempered_law",
]


# ----------------------------------------------------------------------------------------------
# validation helpers


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive_finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_prompt(prompt: Sequence[int], vocab_size: int) -> tuple[int, ...]:
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    tokens = []
    for token in prompt:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise ValueError(f"prompt tokens must be integers, got {token!r}")
        if not 0 <= int(token) < vocab_size:
            raise ValueError(f"prompt token {int(token)} is outside the vocabulary [0, {vocab_size})")
        tokens.append(int(token))
    return tuple(tokens)


def _check_block_size(block_size: Any, max_new_tokens: int) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"block_size must be an integer, got {block_size!r}")
    if not 1 <= int(block_size) <= max_new_tokens:
        raise ValueError(
            f"block_size must be between 1 and max_new_tokens = {max_new_tokens}, got block_size = {int(block_size)}"
        )
    return int(block_size)


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
    n = _check_int("max_new_tokens", max_new_tokens, 0)
    max_support = _check_int("max_support", max_support, 1)
    vocab = lm.vocab_size
    prompt = _check_prompt(prompt, vocab)
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


def _support_for(lm: LanguageModel, n: int, prompt: Sequence[int], support: ExactLaw | None, max_support: int) -> ExactLaw:
    if support is None:
        return enumerate_support(lm, n, prompt, max_support=max_support)
    n = _check_int("max_new_tokens", n, 0)
    prompt = _check_prompt(prompt, lm.vocab_size)
    if support.max_new_tokens != n or support.prompt != prompt or support.vocab_size != lm.vocab_size:
        raise ValueError(
            f"the given support was enumerated for max_new_tokens = {support.max_new_tokens}, prompt {list(support.prompt)}, "
            f"vocabulary {support.vocab_size}; asked for max_new_tokens = {n}, prompt {list(prompt)}, vocabulary {lm.vocab_size}"
        )
    return support


def _blockwise_log_probs(support: ExactLaw, boundaries: Sequence[int], alpha: float) -> np.ndarray:
    """sum over blocks [b0, b1) of  alpha * log p(block | prefix) - log sum_c p(c | prefix)^alpha.

    The sequences are sorted lexicographically, so sequences sharing a prefix are contiguous:
    groups are found by comparing neighbouring rows.
    """
    tokens, lengths, token_lp = support.tokens, support.lengths, support.token_log_probs
    total = np.zeros(len(support), dtype=np.float64)
    for b0, b1 in zip(boundaries[:-1], boundaries[1:]):
        rows = np.nonzero(lengths > b0)[0]
        if rows.size == 0:
            break
        sub = tokens[rows]
        weight = alpha * token_lp[rows, b0:b1].sum(axis=1)
        new_prefix = np.ones(rows.size, dtype=bool)
        new_block = np.ones(rows.size, dtype=bool)
        if rows.size > 1:
            new_prefix[1:] = (sub[1:, :b0] != sub[:-1, :b0]).any(axis=1)
            new_block[1:] = (sub[1:, :b1] != sub[:-1, :b1]).any(axis=1)
        prefix_id = np.cumsum(new_prefix) - 1
        reps = np.nonzero(new_block)[0]  # one row per distinct (prefix, block completion)
        rep_weight, rep_prefix = weight[reps], prefix_id[reps]
        starts = np.nonzero(np.r_[True, rep_prefix[1:] != rep_prefix[:-1]])[0]
        top = np.maximum.reduceat(rep_weight, starts)
        log_norm = top + np.log(np.add.reduceat(np.exp(rep_weight - top[rep_prefix]), starts))
        total[rows] += weight - log_norm[prefix_id]
    return total


# ----------------------------------------------------------------------------------------------
# the laws


def base_law(
    lm: LanguageModel,
    max_new_tokens: int,
    prompt: Sequence[int] = (),
    *,
    support: ExactLaw | None = None,
    max_support: int = DEFAULT_MAX_SUPPORT,
) -> ExactLaw:
    """p(x) on S_n (sums to 1)."""
    support = _support_for(lm, max_new_tokens, prompt, support, max_support)
    return support._with(support.base_log_probs, "base")


def power_law(
    lm: LanguageModel,
    max_new_tokens: int,
    alpha: float,
    prompt: Sequence[int] = (),
    *,
    support: ExactLaw | None = None,
    max_support: int = DEFAULT_MAX_SUPPORT,
) -> ExactLaw:
    """pi_alpha(x) = p(x)^alpha / Z on S_n, for a finite alpha > 0."""
    alpha = _check_positive_finite("alpha", alpha)
    support = _support_for(lm, max_new_tokens, prompt, support, max_support)
    return support._with(alpha * support.base_log_probs, f"power(alpha={alpha:g})")


def nested_law(
    lm: LanguageModel,
    max_new_tokens: int,
    alpha: float,
    block_size: int,
    prompt: Sequence[int] = (),
    *,
    support: ExactLaw | None = None,
    max_support: int = DEFAULT_MAX_SUPPORT,
) -> ExactLaw:
    """prod_k pi(block_k | earlier blocks), pi(c | h) ∝ p(c | h)^alpha over block k's completions.

    Blocks are tokens [(k-1)B, min(kB, n)); the last block's cap is n - (K-1)B.  Exact dynamic
    programming over the block-boundary prefixes of the enumerated support.
    """
    alpha = _check_positive_finite("alpha", alpha)
    n = _check_int("max_new_tokens", max_new_tokens, 0)
    block_size = _check_block_size(block_size, n)
    support = _support_for(lm, n, prompt, support, max_support)
    boundaries = list(range(0, n, block_size)) + [n]
    return support._with(
        _blockwise_log_probs(support, boundaries, alpha), f"nested(alpha={alpha:g}, block_size={block_size})"
    )


def tempered_law(
    lm: LanguageModel,
    max_new_tokens: int,
    temperature: float,
    prompt: Sequence[int] = (),
    *,
    support: ExactLaw | None = None,
    max_support: int = DEFAULT_MAX_SUPPORT,
) -> ExactLaw:
    """Law of autoregressive sampling at temperature tau > 0 on S_n:
    prod_t p(x_t | x_<t)^(1/tau) / sum_v p(v | x_<t)^(1/tau)."""
    temperature = _check_positive_finite("temperature", temperature)
    n = _check_int("max_new_tokens", max_new_tokens, 0)
    support = _support_for(lm, n, prompt, support, max_support)
    return support._with(
        _blockwise_log_probs(support, list(range(n + 1)), 1.0 / temperature), f"tempered(temperature={temperature:g})"
    )


def sample_exact(law: ExactLaw, generator: torch.Generator, num: int) -> list[tuple[int, ...]]:
    """`num` independent exact draws from `law` (inverse CDF with uniforms from `generator`)."""
    num = _check_int("num", num, 0)
    if num == 0:
        return []
    cumulative = np.cumsum(law.probs())
    uniforms = torch.rand(num, generator=generator, dtype=torch.float64, device=generator.device).cpu().numpy()
    index = np.searchsorted(cumulative, uniforms * cumulative[-1], side="right")
    index = np.minimum(index, len(law) - 1)
    return [law.sequences[i] for i in index.tolist()]
