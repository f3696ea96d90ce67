"""Budget matching (METHOD §4): how many best-of-N / majority-vote candidates cost one power chain.

One power-sampling chain whose sequences have length T samples about

    T + N_MCMC * sum_{k=1}^{K} E[tokens resampled at stage k]      (K = ceil(T / B))

tokens; with uniform cuts E = (min(kB, T) + 1) / 2, which gives ≈ N_MCMC T^2 / (4B) + T.  With
within-block cuts E = (block length + 1) / 2 (≈ N_MCMC T / 2 + T); with restart cuts E = min(kB, T).
Priority and entropy cuts use the uniform estimate.  `power_token_budget` computes this, and
`matched_n(budget, T) = max(1, round(budget / T))` is the N whose N * T tokens match it.
"""

from __future__ import annotations

import math

from mcmc_llm.drivers.power import PowerSamplerConfig


def power_token_budget(config: PowerSamplerConfig, length: float | None = None) -> float:
    """Expected tokens sampled by one chain of Algorithm 1 whose sequences have `length` tokens
    (default: the cap `config.max_new_tokens`): the extensions (T) plus N_MCMC resampled suffixes
    per stage (see the module docstring for E[resampled] per kernel)."""
    cap = config.max_new_tokens
    length = float(cap if length is None else min(length, cap))
    if length <= 0:
        raise ValueError(f"expected length must be positive, got {length}")
    block = config.block_size
    resampled = 0.0
    for stage in range(1, math.ceil(length / block) + 1):
        current = min(stage * block, length)
        if config.kernel == "within-block":
            resampled += (current - (stage - 1) * block + 1) / 2
        elif config.kernel == "restart":
            resampled += current
        else:  # uniform; also the estimate for priority and entropy cuts
            resampled += (current + 1) / 2
    return length + config.mcmc_steps * resampled


def matched_n(budget_tokens: float, expected_length: float) -> int:
    """N such that N samples of `expected_length` tokens spend about `budget_tokens` tokens."""
    if not expected_length > 0:
        raise ValueError(f"expected_length must be positive, got {expected_length!r}")
    return max(1, int(round(budget_tokens / expected_length)))
