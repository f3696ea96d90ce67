"""Budget matching (METHOD §4): how many best-of-N / majority-vote candidates cost one power chain.

`power_token_budget` (`mcmc_llm.drivers.power_budget`, where the formula lives, using the cut rule's
`expected_resampled`) is the expected number of tokens one power-sampling chain samples, and
`matched_n(budget, T) = max(1, round(budget / T))` is the N whose N * T tokens match it.
"""

from __future__ import annotations

from mcmc_llm.drivers.power_budget import power_token_budget

__all__ = ["matched_n", "power_token_budget"]


def matched_n(budget_tokens: float, expected_length: float) -> int:
    """N such that N samples of `expected_length` tokens spend about `budget_tokens` tokens."""
    if not expected_length > 0:
        raise ValueError(f"expected_length must be positive, got {expected_length!r}")
    return max(1, int(round(budget_tokens / expected_length)))
