"""Per-problem pass@k and percentile-bootstrap confidence intervals over problems.

A benchmark score is a mean over problems of a per-problem quantity (pass@1 = c/n, or the unbiased
pass@k of `mcmc_llm.tasks.pass_at_k`).  Its sampling variability comes from both the problems and
the samples; resampling problems with replacement (each keeping its own samples) captures the
first, which dominates when there are few problems.  `bootstrap_interval` returns the mean and the
(level) percentile interval of `num_resamples` resampled means, seeded.
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
