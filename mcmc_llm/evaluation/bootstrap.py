"""Per-problem pass@k, percentile-bootstrap confidence intervals over problems, paired tests.

A benchmark score is a mean over problems of a per-problem quantity (pass@1 = c/n, or the unbiased
pass@k of `mcmc_llm.tasks.pass_at_k`).  Its sampling variability comes from both the problems and
the samples; resampling problems with replacement (each keeping its own samples) captures the
first, which dominates when there are few problems.  `bootstrap_interval` returns the mean and the
(level) percentile interval of `num_resamples` resampled means, seeded.

Two methods run on the same problems are compared through the per-problem differences d_i:
`paired_difference` (their mean and bootstrap interval), `bootstrap_p_value` (two-sided, the p-value
matching the percentile interval) and `sign_flip_p_value` (a paired permutation test).  Correct a
family of such p-values with `mcmc_llm.evaluation.multiplicity.holm_adjust`.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from mcmc_llm.tasks import pass_at_k


@dataclasses.dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    problems: int

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "problems": self.problems}


def outcomes_by_problem(records: Sequence[dict[str, Any]], method: str) -> dict[str, list[bool]]:
    """`task_id -> [passed of every sample]` for one method's records."""
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        if record["method"] == method:
            outcomes[str(record["task_id"])].append(bool(record["passed"]))
    return dict(outcomes)


def pass_at_k_by_problem(records: Sequence[dict[str, Any]], method: str, k: int) -> np.ndarray:
    """Unbiased pass@k of every problem of `method` (problems with fewer than k samples are an error)."""
    outcomes = outcomes_by_problem(records, method)
    if not outcomes:
        raise ValueError(f"no records of method {method!r}")
    short = {task: len(v) for task, v in outcomes.items() if len(v) < k}
    if short:
        raise ValueError(f"pass@{k} of {method!r} needs >= {k} samples per problem; some have fewer: {dict(list(short.items())[:3])}")
    return np.array([pass_at_k(len(v), sum(v), k) for _, v in sorted(outcomes.items())])


def bootstrap_interval(values: Sequence[float], *, num_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of `values` (one per problem) and its percentile-bootstrap interval over problems."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"need a non-empty 1-D array of per-problem values, got shape {values.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(num_resamples, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(values.mean()), float(low), float(high), int(values.size))


def pass_at_k_interval(records: Sequence[dict[str, Any]], method: str, k: int = 1, **bootstrap) -> Interval:
    """pass@k of `method` over problems, with its bootstrap interval."""
    return bootstrap_interval(pass_at_k_by_problem(records, method, k), **bootstrap)


def _paired(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"need a non-empty 1-D array of per-problem differences, got shape {values.shape}")
    return values


def paired_difference(a: Sequence[float], b: Sequence[float], **bootstrap) -> Interval:
    """Mean of the per-problem differences a_i - b_i and its percentile-bootstrap interval: both
    methods' values of a problem are resampled together, so problem difficulty cancels.  `a` and
    `b` must list the same problems in the same order (e.g. both from `pass_at_k_by_problem`)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same problems: shapes {a.shape} and {b.shape}")
    return bootstrap_interval(a - b, **bootstrap)


def bootstrap_p_value(differences: Sequence[float], *, num_resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided percentile-bootstrap p-value of "mean difference = 0" over problems:
    p = min(1, 2 min(#{m* <= 0}, #{m* >= 0}) / R) over R resampled means m* (problems drawn with
    replacement).  Up to quantile interpolation it is the smallest 1 - level at which a percentile
    interval from the same resamples excludes 0, so it agrees with the intervals; like them it is
    somewhat anti-conservative with few problems.  All-zero differences give 1."""
    d = _paired(differences)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(num_resamples, d.size))].mean(axis=1)
    tail = min(int(np.sum(means <= 0.0)), int(np.sum(means >= 0.0)))
    return float(min(1.0, 2.0 * tail / num_resamples))


def sign_flip_p_value(differences: Sequence[float], *, num_resamples: int = 100000, seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) p-value of "no difference between the methods":
    under the null the two methods' per-problem values are exchangeable, so each difference d_i is
    as likely to be -d_i.  p = (1 + #{|mean(s d)| >= |mean(d)|}) / (1 + R) over R vectors s of
    independent uniform signs (seeded; the +1 makes it a valid p-value for any R).  Exact for
    every number of problems, unlike the bootstrap's large-sample justification."""
    d = _paired(differences)
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    hits, done, chunk = 0, 0, 20000
    while done < num_resamples:
        size = min(chunk, num_resamples - done)
        signs = rng.integers(0, 2, size=(size, d.size)) * 2 - 1
        # tolerance: flipped means equal to the observed one in exact arithmetic must count
        hits += int(np.sum(np.abs(signs @ d) / d.size >= observed - 1e-12))
        done += size
    return float((1 + hits) / (1 + num_resamples))
