"""The exact output law of block-wise MH at a finite N_MCMC, on an enumerable toy LM.

Algorithm 1 is a composition of stage operators on laws over sequences: stage k (cap n_k) maps
a law v to `v E_k M_k^N` (extension E_k, then N MH steps M_k).  On a toy LM every sequence of at
most T tokens, terminated or not, is a state, so E_k and M_k are explicit matrices and the law
after the last stage is computed exactly: no sampling error.  Three chains:

* `"exact"`: our sampler with uniform cuts.  E_k extends an unterminated x to S_{n_k}
  (continuations ending with EOS within n_k tokens, or unterminated at exactly n_k);
  M_k proposes, for a cut m uniform on the L generated positions, a suffix up to n_k and accepts
  with the exact ratio
      alpha [log p(y) - log p(x)] + log q(x_{>=m} | x_<m) - log q(y_{>=m} | x_<m) + log(L_x / L_y).
* `"published"`: the same proposal with the published ratio (truncated current suffix, no
  cut-index term; `mcmc_llm.proposals.published_ratio`).
* `"reference"`: the published chain (`mcmc_llm.drivers.published_chain`): proposals regenerate
  at most L - m tokens, extensions add B tokens to the current length, the published ratio, and
  a chain that ended with EOS stops after its block.  Proposals and extensions sample from the
  top-k of q (k = 50 as in `generate`; no truncation for vocabularies of 50 tokens or fewer).

q is the base model at temperature tau (default 1/alpha).  `chain_law` returns `{sequence: prob}`;
sequences outside S_T (unterminated and shorter than T) appear only for the published chain.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch

from mcmc_llm.lm.protocol import LanguageModel, TokenBatch

CHAINS = ("exact", "published", "reference")
MAX_STATES = 4000


class _Tokens:
    """Per-token log p and log q of every prefix's next token (cached model calls)."""

    def __init__(self, lm: LanguageModel, prompt: Sequence[int], temperature: float, top_k: int | None):
        self.lm, self.prompt, self.temperature, self.top_k = lm, list(prompt), temperature, top_k
        self.cache: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.eos = set(lm.eos_token_ids)

    def next(self, prefix: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        if prefix not in self.cache:
            state = self.lm.start(TokenBatch.from_lists([self.prompt + list(prefix)], device=self.lm.device))
            log_p = state.logprobs[0].to(torch.float64).cpu().numpy()
            scaled = log_p / self.temperature
            if self.top_k is not None and self.top_k < scaled.size:
                threshold = np.sort(scaled)[-self.top_k]
                scaled = np.where(scaled >= threshold, scaled, -np.inf)
            log_q = scaled - np.logaddexp.reduce(scaled)
            self.cache[prefix] = (log_p, log_q)
        return self.cache[prefix]

    def continuations(self, prefix: tuple[int, ...], budget: int):
        """Every (suffix, log q) the proposal can draw after `prefix` with at most `budget` tokens."""
        if budget <= 0:
            yield (), 0.0
            return
        _, log_q = self.next(prefix)
        for token in np.flatnonzero(np.isfinite(log_q)):
            token = int(token)
            if token in self.eos or budget == 1:
                yield (token,), float(log_q[token])
                continue
            for rest, rest_q in self.continuations(prefix + (token,), budget - 1):
                yield (token,) + rest, float(log_q[token]) + rest_q

    def sums(self, sequence: tuple[int, ...], start: int, end: int) -> tuple[float, float]:
        """(sum log p, sum log q) of tokens start .. end - 1 of `sequence`."""
        total_p = total_q = 0.0
        for t in range(start, end):
            log_p, log_q = self.next(sequence[:t])
            total_p += float(log_p[sequence[t]])
            total_q += float(log_q[sequence[t]])
        return total_p, total_q


def _states(vocab: int, eos: set[int], cap: int) -> list[tuple[int, ...]]:
    words = [t for t in range(vocab) if t not in eos]
    states = []
    for length in range(cap + 1):
        for body in itertools.product(words, repeat=length):
            states.append(body)
            if length < cap:
                states.extend(body + (e,) for e in sorted(eos))
    if len(states) > MAX_STATES:
        raise ValueError(f"{len(states)} sequences of at most {cap} tokens; the exact chain law handles at most {MAX_STATES}")
    return states


def _ended(sequence: tuple[int, ...], eos: set[int]) -> bool:
    return bool(sequence) and sequence[-1] in eos


def _log_accept(chain, tokens, alpha, x, y, m) -> float:
    """The chain's log MH ratio for moving x -> y at cut m."""
    if chain == "exact":
        p_x, q_x = tokens.sums(x, m, len(x))
        p_y, q_y = tokens.sums(y, m, len(y))
        return alpha * (p_y - p_x) + q_x - q_y + math.log(len(x)) - math.log(len(y))
    shared = min(len(x), len(y))
    p_x, q_x = tokens.sums(x, m, shared)
    p_y, q_y = tokens.sums(y, m, len(y))
    return alpha * (p_y - p_x) + q_x - q_y


def chain_law(
    lm: LanguageModel,
    *,
    alpha: float,
    block_size: int,
    max_new_tokens: int,
    mcmc_steps: int,
    chain: str = "exact",
    prompt: Sequence[int] = (),
    temperature: float | None = None,
    top_k: int | None = 50,
) -> dict[tuple[int, ...], float]:
    """The exact law of the chain's output after all stages (`top_k` applies to "reference" only)."""
    if chain not in CHAINS:
        raise ValueError(f"unknown chain {chain!r}; allowed: {', '.join(CHAINS)}")
    tau = 1.0 / alpha if temperature is None else temperature
    tokens = _Tokens(lm, prompt, tau, top_k if chain == "reference" else None)
    eos = tokens.eos
    states = _states(lm.vocab_size, eos, max_new_tokens)
    index = {state: i for i, state in enumerate(states)}
    law = np.zeros(len(states))
    law[index[()]] = 1.0
    stages = math.ceil(max_new_tokens / block_size)
    for stage in range(stages):
        stage_cap = min((stage + 1) * block_size, max_new_tokens)
        frozen = np.array([chain == "reference" and _ended(s, eos) for s in states])
        moving = np.where(frozen, 0.0, law)
        extension = np.zeros((len(states), len(states)))
        for i, x in enumerate(states):
            if _ended(x, eos):
                extension[i, i] = 1.0
                continue
            cap = min(len(x) + block_size, max_new_tokens) if chain == "reference" else stage_cap
            for suffix, log_q in tokens.continuations(x, cap - len(x)):
                extension[i, index[x + suffix]] += math.exp(log_q)
        moving = moving @ extension
        if mcmc_steps:
            moving = moving @ np.linalg.matrix_power(_mh_matrix(chain, tokens, states, index, alpha, stage_cap), mcmc_steps)
        law = np.where(frozen, law, 0.0) + moving
    return {state: float(mass) for state, mass in zip(states, law) if mass > 0}


def _mh_matrix(chain, tokens, states, index, alpha, stage_cap) -> np.ndarray:
    """One MH step of the stage, on the states the stage can reach (identity rows elsewhere)."""
    matrix = np.eye(len(states))
    for i, x in enumerate(states):
        reachable = len(x) <= stage_cap if chain == "reference" else (
            len(x) == stage_cap or (len(x) < stage_cap and _ended(x, tokens.eos)))
        if not reachable or len(x) == 0:
            continue
        for m in range(len(x)):
            budget = len(x) - m if chain == "reference" else stage_cap - m
            for suffix, log_q in tokens.continuations(x[:m], budget):
                y = x[:m] + suffix
                if y == x:
                    continue
                accept = math.exp(min(0.0, _log_accept(chain, tokens, alpha, x, y, m)))
                weight = math.exp(log_q) / len(x) * accept
                matrix[i, index[y]] += weight
                matrix[i, i] -= weight
    return matrix


__all__ = ["CHAINS", "chain_law"]
