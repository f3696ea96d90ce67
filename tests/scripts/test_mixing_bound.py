"""The mixing study's proven lower bound (paper_figures/mixing_study.py): for alpha > 1 and every x
in S_T, E_{p^alpha}[log p] >= alpha / (alpha - 1) * log p(x).  Checked exactly on random laws over
S_T, and the support rule is shown to matter: an output outside S_T (an unfinished prefix) can
break the bound, and the script excludes it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "paper_figures"))

import mixing_study  # noqa: E402


def exact_mean_log_p(p: np.ndarray, alpha: float) -> float:
    weights = p ** alpha
    return float((weights * np.log(p)).sum() / weights.sum())


@pytest.mark.parametrize("alpha", [1.5, 2.0, 4.0, 8.0])
def test_the_bound_holds_for_every_sequence_on_random_laws(alpha):
    rng = np.random.default_rng(0)
    for concentration in (0.05, 0.5, 5.0):  # peaked to flat laws over 40 sequences
        for _ in range(200):
            p = rng.dirichlet(np.full(40, concentration))
            p = np.clip(p, 1e-300, None) / np.clip(p, 1e-300, None).sum()
            truth = exact_mean_log_p(p, alpha)
            rows = [{"problem": 0, "log_p": float(np.log(v)), "ended": True, "length": 3} for v in p]
            mean, bounds = mixing_study.log_p_lower_bound(rows, alpha)
            assert mean == bounds[0] == pytest.approx(alpha / (alpha - 1) * np.log(p.max()))
            assert mean <= truth + 1e-9
            log_z = np.log((p ** alpha).sum())
            assert alpha / (alpha - 1) * np.log(p.max()) <= log_z / (alpha - 1) + 1e-9 <= truth + 2e-9


def test_outputs_outside_s_t_are_excluded_because_they_would_break_the_bound():
    # every sequence starts with the same token (the prefix has p = 1), then 8 equally likely
    # endings of 2 more tokens reaching the cap: E_{p^alpha}[log p] = log(1/8).
    cap = mixing_study.MAX_NEW_TOKENS
    finished = [{"problem": 0, "log_p": float(np.log(1 / 8)), "ended": False, "length": cap} for _ in range(8)]
    prefix = {"problem": 0, "log_p": 0.0, "ended": False, "length": 1}
    truth = float(np.log(1 / 8))
    assert not mixing_study.in_support(prefix)
    assert mixing_study.log_p_lower_bound(finished + [prefix], 4.0)[0] <= truth
    wrongly_admitted = 4.0 / 3.0 * prefix["log_p"]  # what the bound would say with the prefix let in
    assert wrongly_admitted > truth
