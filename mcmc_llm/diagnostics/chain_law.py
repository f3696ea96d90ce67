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

q is the base model at temperature tau (default 1/alpha).  For the exact chain, `stage_proposals`
may give each stage's MH proposal its own law: `stage_proposals[k] = (proposal LM, temperature)`
(extensions still draw from the base model at tau; the ratio then reads log p from the base model
and log q from stage k's proposal), which is the law of `power_sample(proposal=...)` with a
per-stage `SuffixResampling`.  `chain_law` returns `{sequence: prob}`; sequences outside S_T
(unterminated and shorter than T) appear only for the published chain.
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


def _log_accept(chain, tokens, alpha, x, y, m, proposing=None) -> float:
    """The chain's log MH ratio for moving x -> y at cut m (log q from `proposing`, default `tokens`)."""
    if chain == "exact":
        p_x, q_x = tokens.sums(x, m, len(x))
        p_y, q_y = tokens.sums(y, m, len(y))
        if proposing is not None and proposing is not tokens:  # log q from the stage's own proposal
            q_x, q_y = proposing.sums(x, m, len(x))[1], proposing.sums(y, m, len(y))[1]
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
    stage_proposals: Sequence[tuple[LanguageModel, float]] | None = None,
) -> dict[tuple[int, ...], float]:
    """The exact law of the chain's output after all stages (`top_k` applies to "reference" only;
    `stage_proposals`, one `(LM, temperature)` per stage, to "exact" only: module docstring)."""
    if chain not in CHAINS:
        raise ValueError(f"unknown chain {chain!r}; allowed: {', '.join(CHAINS)}")
    stages = math.ceil(max_new_tokens / block_size)
    if stage_proposals is not None and (chain != "exact" or len(stage_proposals) != stages):
        raise ValueError(f"stage_proposals needs chain='exact' and one (LM, temperature) per stage ({stages}), "
                         f"got chain={chain!r} and {len(stage_proposals)}")
    tau = 1.0 / alpha if temperature is None else temperature
    tokens = _Tokens(lm, prompt, tau, top_k if chain == "reference" else None)
    eos = tokens.eos
    states = _states(lm.vocab_size, eos, max_new_tokens)
    index = {state: i for i, state in enumerate(states)}
    law = np.zeros(len(states))
    law[index[()]] = 1.0
    proposing: dict[tuple[int, float], _Tokens] = {}
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
            stage_tokens = None
            if stage_proposals is not None:
                proposal_lm, proposal_temperature = stage_proposals[stage]
                key = (id(proposal_lm), float(proposal_temperature))
                stage_tokens = proposing.setdefault(key, _Tokens(proposal_lm, prompt, proposal_temperature, None))
            matrix = _mh_matrix(chain, tokens, states, index, alpha, stage_cap, stage_tokens)
            moving = moving @ np.linalg.matrix_power(matrix, mcmc_steps)
        law = np.where(frozen, law, 0.0) + moving
    return {state: float(mass) for state, mass in zip(states, law) if mass > 0}


def _mh_matrix(chain, tokens, states, index, alpha, stage_cap, proposing=None) -> np.ndarray:
    """One MH step of the stage, on the states the stage can reach (identity rows elsewhere); the
    proposal draws from `proposing` (default: `tokens`, the base model at the chain's temperature)."""
    proposing = proposing or tokens
    matrix = np.eye(len(states))
    for i, x in enumerate(states):
        reachable = len(x) <= stage_cap if chain == "reference" else (
            len(x) == stage_cap or (len(x) < stage_cap and _ended(x, tokens.eos)))
        if not reachable or len(x) == 0:
            continue
        for m in range(len(x)):
            budget = len(x) - m if chain == "reference" else stage_cap - m
            for suffix, log_q in proposing.continuations(x[:m], budget):
                y = x[:m] + suffix
                if y == x:
                    continue
                accept = math.exp(min(0.0, _log_accept(chain, tokens, alpha, x, y, m, proposing)))
                weight = math.exp(log_q) / len(x) * accept
                matrix[i, index[y]] += weight
                matrix[i, i] -= weight
    return matrix


__all__ = ["CHAINS", "chain_law"]
