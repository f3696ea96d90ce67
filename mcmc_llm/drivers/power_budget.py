"""The expected token cost of the block-wise power sampler (`power_token_budget`, METHOD §4), used by
the compute-matched baselines (`mcmc_llm.evaluation.methods.budget`) and the accounting experiment.
`mcmc_llm.drivers.power` re-exports it.
"""

from __future__ import annotations

import math

from mcmc_llm.drivers.power_config import PowerSamplerConfig
from mcmc_llm.proposals.cut_rules import CutRule


def power_token_budget(config: PowerSamplerConfig, length: float | None = None) -> float:
    """Expected tokens sampled by one chain of Algorithm 1 whose sequences have `length` tokens
    (default: the cap `config.max_new_tokens`) and draw no early EOS (METHOD §4):

        T + N_MCMC * sum_{k=1}^{K} E[tokens resampled at stage k],   K = ceil(T / B),

    E from the cut rule (`CutRule.expected_resampled` at length min(kB, T)): (L + 1) / 2 for
    uniform cuts (≈ N T^2 / (4B) + T), (block length + 1) / 2 within the block (≈ N T / 2 + T),
    L for restarts; the uniform estimate for rules that read more than lengths.  The one place
    this formula lives (compute-matched baselines and the accounting experiment use it)."""
    cap = config.max_new_tokens
    length = float(cap if length is None else min(length, cap))
    if length <= 0:
        raise ValueError(f"expected length must be positive, got {length}")
    rule = config.cut_rule_object()
    block = config.block_size
    resampled = 0.0
    for stage in range(1, math.ceil(length / block) + 1):
        current = min(stage * block, length)
        resampled += _expected_at(rule, current, (stage - 1) * block)
    return length + config.mcmc_steps * resampled


def _expected_at(rule: CutRule, length: float, block_start: int) -> float:
    """`rule.expected_resampled` at a possibly fractional length (linear between integers)."""
    low = int(math.floor(length))
    if low == length or low < 1:
        return rule.expected_resampled(max(int(round(length)), 1), block_start)
    share = length - low
    return (1 - share) * rule.expected_resampled(low, block_start) + share * rule.expected_resampled(low + 1, block_start)


__all__ = ["power_token_budget"]
