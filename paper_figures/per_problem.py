"""Per-problem accuracies of methods and selection rules under strict or lenient grading, shared
by compute_matched.py and paired_tests.py (a helper, not a figure script).

A `Point` names one way of spending tokens on a problem: a stored method's single output
(`rule = "pass1"`, its pass@1), or a selection rule over N of its stored samples ("majority",
"best_log_p"; `mcmc_llm.evaluation.selection`, exact means over subsets).  Its tokens per problem
are N times the method's mean `compute.tokens_sampled` per output (the counter of each generate
call divided by the outputs it returned, so only the mean over outputs is exact, not a problem's
own count), and likewise for `tokens_encoded`.

A point may be restricted to the problems of another run (`on`): `Point(MAIN, "low_temp",
on="samplers")` is low temperature on the 24 problems of the sampler run, the baseline that the
samplers are paired with.  Paired differences need both points on the same problems.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from common import on_problems_of, records
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
    on: str | None = None  # keep only the problems of this run (None: all of the file's problems)

    def label(self, names: dict[str, str]) -> str:
        return names.get(self.method, self.method) + RULE_NAMES[self.rule].format(n=self.n)

    def restricted(self, on: str | None) -> "Point":
        """The same point on the problems of run `on` (unchanged for the run itself)."""
        return self if on is None or on == self.file else dataclasses.replace(self, on=on)


class Store:
    """The records of `results`, regraded once per grading, and per-problem values of points."""

    def __init__(self, results: Path):
        self.results = results
        self._raw: dict[tuple[str, str | None], list[dict]] = {}
        self._graded: dict[tuple[str, str | None, str], list[dict]] = {}

    def raw(self, file: str, on: str | None = None) -> list[dict]:
        """The records of `file` (an empty list if it is missing), on the problems of run `on` if given."""
        if (file, None) not in self._raw:
            self._raw[(file, None)] = records(self.results, file) if (self.results / f"{file}.jsonl").exists() else []
        if (file, on) not in self._raw:
            mine, others = self.raw(file), self.raw(on)
            self._raw[(file, on)] = on_problems_of(mine, others) if mine and others else []
        return self._raw[(file, on)]

    def graded(self, file: str, grading: str, on: str | None = None) -> list[dict]:
        if grading not in GRADINGS:
            raise ValueError(f"grading must be one of {GRADINGS}, got {grading!r}")
        if (file, on, grading) not in self._graded:
            self._graded[(file, on, grading)] = regraded(self.raw(file, on), grading)
        return self._graded[(file, on, grading)]

    def _mine(self, point: Point) -> list[dict]:
        return [r for r in self.raw(point.file, point.on) if r["method"] == point.method]

    def has(self, point: Point) -> bool:
        return bool(self._mine(point))

    def samples(self, point: Point) -> int:
        """The fewest stored samples of any problem of the point's method."""
        counts: dict[str, int] = {}
        for r in self._mine(point):
            counts[r["task_id"]] = counts.get(r["task_id"], 0) + 1
        return min(counts.values()) if counts else 0

    def tasks(self, point: Point) -> list[str]:
        return sorted({str(r["task_id"]) for r in self._mine(point)})

    def values(self, point: Point, grading: str) -> np.ndarray:
        """Per-problem accuracy of `point` (task ids sorted)."""
        recs = self.graded(point.file, grading, point.on)
        if point.rule == "pass1":
            return pass_at_k_by_problem(recs, point.method, 1)
        return subset_accuracy_by_problem(recs, point.method, point.n, point.rule)

    def tokens(self, point: Point, counter: str = "tokens_sampled") -> float:
        """Mean tokens per problem that the point spends (N outputs of its method)."""
        return point.n * float(np.mean([r["compute"][counter] for r in self._mine(point)]))

    def matched(self, point: Point, low: Point) -> int | None:
        """The N of `low`'s stored samples whose tokens are nearest the point's: round(tokens(point) /
        tokens per output of `low`), None unless 1 <= N <= the samples stored per problem."""
        n = round(self.tokens(point) / self.tokens(low))
        return n if 1 <= n <= self.samples(low) else None

    def difference(self, a: Point, b: Point, grading: str) -> np.ndarray:
        """Per-problem a - b (both must cover the same problems)."""
        if self.tasks(a) != self.tasks(b):
            raise ValueError(f"{a} and {b} cover different problems")
        return self.values(a, grading) - self.values(b, grading)
