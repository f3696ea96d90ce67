"""Multiplicity adjustment for a family of tests.

Holm's step-down procedure (Holm 1979) controls the family-wise error rate (the probability of at
least one false rejection among m tests) at level a under any dependence between the tests, and
rejects at least everything Bonferroni (p_i <= a/m) rejects.  Sort the p-values
p_(1) <= ... <= p_(m); the adjusted values are

    p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)),

and test i is rejected at family-wise level a iff p~_i <= a.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values, in the order given (see the module docstring)."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"need a 1-D sequence of p-values, got shape {p.shape}")
    if p.size and (np.any(np.isnan(p)) or np.any(p < 0.0) or np.any(p > 1.0)):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted
