"""Per-problem pass@k and bootstrap intervals over problems."""

from __future__ import annotations

import numpy as np
import pytest

from mcmc_llm.evaluation.bootstrap import bootstrap_interval, pass_at_k_by_problem, pass_at_k_interval


def records(outcomes: dict[str, list[bool]], method="m"):
    return [{"method": method, "task_id": t, "passed": p} for t, v in outcomes.items() for p in v]


def test_pass_at_k_per_problem_is_the_unbiased_estimator():
    recs = records({"a": [True, False, False, False], "b": [False] * 4, "c": [True] * 4}) + records({"a": [False]}, "other")
    assert pass_at_k_by_problem(recs, "m", 1).tolist() == [0.25, 0.0, 1.0]
    # problem a: 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k_by_problem(recs, "m", 2).tolist() == [0.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="pass@5 of 'm' needs >= 5"):
        pass_at_k_by_problem(recs, "m", 5)
    with pytest.raises(ValueError, match="no records of method 'x'"):
        pass_at_k_by_problem(recs, "x", 1)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_problems():
    rng = np.random.default_rng(0)
    small = bootstrap_interval(rng.random(10) < 0.3, seed=1)
    large = bootstrap_interval(rng.random(1000) < 0.3, seed=1)
    for interval in (small, large):
        assert interval.low <= interval.mean <= interval.high
    assert (large.high - large.low) < (small.high - small.low) / 4
    # binomial standard error at n=1000, p=0.3 is 0.0145: a 95% interval is about 4 of them wide
    assert 0.04 < large.high - large.low < 0.08
    assert bootstrap_interval([1.0, 1.0]).as_dict() == {"mean": 1.0, "low": 1.0, "high": 1.0, "problems": 2}
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_interval([1.0], level=1.5)


def test_pass_at_k_interval_is_seeded():
    recs = records({str(i): [i % 3 == 0, i % 2 == 0] for i in range(12)})
    assert pass_at_k_interval(recs, "m", 1, seed=3) == pass_at_k_interval(recs, "m", 1, seed=3)
    assert pass_at_k_interval(recs, "m", 2).mean == pytest.approx(np.mean([(i % 3 == 0) or (i % 2 == 0) for i in range(12)]))


def test_paired_difference_and_p_values():
    from mcmc_llm.evaluation.bootstrap import bootstrap_p_value, paired_difference, sign_flip_p_value

    rng = np.random.default_rng(0)
    a = rng.random(24)
    shifted = a + 0.3 + 0.05 * rng.normal(size=24)
    difference = paired_difference(shifted, a, seed=2)
    assert difference == bootstrap_interval(shifted - a, seed=2) and difference.low > 0.25
    with pytest.raises(ValueError, match="same problems"):
        paired_difference(a, a[:3])
    # a clear shift: both tests reject; no shift (symmetric noise): neither does
    assert bootstrap_p_value(shifted - a) < 1e-3 and sign_flip_p_value(shifted - a, num_resamples=5000) < 1e-3
    noise = rng.normal(size=24)
    assert bootstrap_p_value(noise) > 0.05 and sign_flip_p_value(noise, num_resamples=5000) > 0.05
    assert bootstrap_p_value(np.zeros(5)) == 1.0 and sign_flip_p_value(np.zeros(5), num_resamples=100) == 1.0
    assert sign_flip_p_value(noise, seed=4, num_resamples=3000) == sign_flip_p_value(noise, seed=4, num_resamples=3000)
    # sign flips of 3 problems, all differences +1: only the all-plus and all-minus of the 8 sign
    # vectors reach |mean| = 1, so p -> 2/8 as the flips grow
    assert sign_flip_p_value([1.0, 1.0, 1.0], num_resamples=40000) == pytest.approx(0.25, abs=0.01)
    # the bootstrap p-value is where the percentile interval reaches 0
    p = bootstrap_p_value(noise + 0.4, num_resamples=4000, seed=5)
    interval = bootstrap_interval(noise + 0.4, num_resamples=4000, seed=5, level=1 - p)
    assert abs(min(abs(interval.low), abs(interval.high))) < 0.02
