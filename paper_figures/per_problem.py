"""Per-problem accuracies of methods and selection rules under strict or lenient grading, shared
by compute_matched.py and paired_tests.py (a helper, not a figure script).

A `Point` names one way of spending tokens on a problem: a stored method's single output
(`rule = "pass1"`, its pass@1), or a selection rule over N of its stored samples ("majority",
"best_log_p"; `mcmc_llm.evaluation.selection`, exact means over subsets).  Its tokens per problem
are N times the method's mean `compute.tokens_sampled` per output (the counter of each generate
call divided by the outputs it returned, so only the mean over outputs is exact, not a problem's
own count), and likewise for `tokens_encoded`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from common import records
from mcmc_llm.evaluation.bootstrap import pass_at_k_by_problem
from mcmc_llm.evaluation.grading import GRADINGS, regraded
from mcmc_llm.evaluation.selection import subset_accuracy_by_problem

RULE_NAMES = {"pass1": "@1", "majority": " majority@{n}", "best_log_p": " best-of-{n} by log p"}


@dataclasses.dataclass(frozen=True)
class Point:
    file: str
    method: str
    rule: str = "pass1"
    n: int = 1

    def label(self, names: dict[str, str]) -> str:
        return names.get(self.method, self.method) + RULE_NAMES[self.rule].format(n=self.n)


class Store:
    """The records of `results`, regraded once per grading, and per-problem values of points."""

    def __init__(self, results: Path):
        self.results = results
        self._raw: dict[str, list[dict]] = {}
        self._graded: dict[tuple[str, str], list[dict]] = {}

    def raw(self, file: str) -> list[dict]:
        if file not in self._raw:
            self._raw[file] = records(self.results, file) if (self.results / f"{file}.jsonl").exists() else []
        return self._raw[file]

    def graded(self, file: str, grading: str) -> list[dict]:
        if grading not in GRADINGS:
            raise ValueError(f"grading must be one of {GRADINGS}, got {grading!r}")
        if (file, grading) not in self._graded:
            self._graded[(file, grading)] = regraded(self.raw(file), grading)
        return self._graded[(file, grading)]

    def has(self, point: Point) -> bool:
        return any(r["method"] == point.method for r in self.raw(point.file))

    def samples(self, point: Point) -> int:
        """The fewest stored samples of any problem of the point's method."""
        counts: dict[str, int] = {}
        for r in self.raw(point.file):
            if r["method"] == point.method:
                counts[r["task_id"]] = counts.get(r["task_id"], 0) + 1
        return min(counts.values()) if counts else 0

    def tasks(self, point: Point) -> list[str]:
        return sorted({str(r["task_id"]) for r in self.raw(point.file) if r["method"] == point.method})

    def values(self, point: Point, grading: str) -> np.ndarray:
        """Per-problem accuracy of `point` (task ids sorted)."""
        recs = self.graded(point.file, grading)
        if point.rule == "pass1":
            return pass_at_k_by_problem(recs, point.method, 1)
        return subset_accuracy_by_problem(recs, point.method, point.n, point.rule)

    def tokens(self, point: Point, counter: str = "tokens_sampled") -> float:
        """Mean tokens per problem that the point spends (N outputs of its method)."""
        mine = [r["compute"][counter] for r in self.raw(point.file) if r["method"] == point.method]
        return point.n * float(np.mean(mine))

    def difference(self, a: Point, b: Point, grading: str) -> np.ndarray:
        """Per-problem a - b (both must cover the same problems)."""
        if self.tasks(a) != self.tasks(b):
            raise ValueError(f"{a} and {b} cover different problems")
        return self.values(a, grading) - self.values(b, grading)
