"""Holm's step-down adjustment."""

from __future__ import annotations

import numpy as np
import pytest

from mcmc_llm.evaluation.multiplicity import holm_adjust


def test_holm_known_examples():
    # Holm (1979) as in the textbook example: p = 0.01, 0.04, 0.03, 0.005 at family level 0.05
    # rejects the hypotheses with 0.005 and 0.01 only (0.03 > 0.05/2).
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert (adjusted <= 0.05).tolist() == [True, False, False, True]
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm")
    np.testing.assert_allclose(holm_adjust([0.01, 0.02, 0.03, 0.04, 0.05]), [0.05, 0.08, 0.09, 0.09, 0.09])
    np.testing.assert_allclose(holm_adjust([0.5, 0.9]), [1.0, 1.0])
    assert holm_adjust([]).size == 0 and holm_adjust([0.2]).tolist() == [0.2]


def test_holm_is_monotone_and_between_raw_and_bonferroni():
    p = np.random.default_rng(0).random(12) ** 3
    adjusted = holm_adjust(p)
    assert np.all(adjusted >= p) and np.all(adjusted <= np.minimum(1.0, p * p.size) + 1e-15)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm_adjust([0.1, 1.2])
