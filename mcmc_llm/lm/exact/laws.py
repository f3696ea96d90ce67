"""Exact laws over the length-capped support S_n of a small-vocabulary language model.

S_n, the token convention and the enumeration are in `mcmc_llm.lm.exact.support`; every law below
is an `ExactLaw` over the enumerated support of one (model, prompt, n), conditioned on the prompt.

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
* `sample_exact`:  independent exact draws from any of them.

Each law takes an already enumerated `support=` (any law of the same model, prompt and n) to
skip the enumeration.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from mcmc_llm.core.validate import integer, number
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.exact.support import DEFAULT_MAX_SUPPORT, ExactLaw, check_prompt, enumerate_support

__all__ = ["base_law", "nested_law", "power_law", "sample_exact", "tempered_law"]


# ----------------------------------------------------------------------------------------------
# validation helpers


def _check_block_size(block_size: Any, max_new_tokens: int) -> int:
    block_size = integer("block_size", block_size, None)
    if not 1 <= block_size <= max_new_tokens:
        raise ValueError(
            f"block_size must be between 1 and max_new_tokens = {max_new_tokens}, got block_size = {block_size}"
        )
    return block_size


def _support_for(lm: LanguageModel, n: int, prompt: Sequence[int], support: ExactLaw | None, max_support: int) -> ExactLaw:
    if support is None:
        return enumerate_support(lm, n, prompt, max_support=max_support)
    n = integer("max_new_tokens", n, 0)
    prompt = check_prompt(prompt, lm.vocab_size)
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
    alpha = number("alpha", alpha, 0, strict=True)
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
    alpha = number("alpha", alpha, 0, strict=True)
    n = integer("max_new_tokens", max_new_tokens, 0)
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
    temperature = number("temperature", temperature, 0, strict=True)
    n = integer("max_new_tokens", max_new_tokens, 0)
    support = _support_for(lm, n, prompt, support, max_support)
    return support._with(
        _blockwise_log_probs(support, list(range(n + 1)), 1.0 / temperature), f"tempered(temperature={temperature:g})"
    )


def sample_exact(law: ExactLaw, generator: torch.Generator, num: int) -> list[tuple[int, ...]]:
    """`num` independent exact draws from `law` (inverse CDF with uniforms from `generator`)."""
    num = integer("num", num, 0)
    if num == 0:
        return []
    cumulative = np.cumsum(law.probs())
    uniforms = torch.rand(num, generator=generator, dtype=torch.float64, device=generator.device).cpu().numpy()
    index = np.searchsorted(cumulative, uniforms * cumulative[-1], side="right")
    index = np.minimum(index, len(law) - 1)
    return [law.sequences[i] for i in index.tolist()]
