"""Regrade stored arithmetic records from their completion text, strictly or leniently.

The arithmetic grader (`mcmc_llm.tasks.arithmetic.extract_integer`) takes the first rule that
yields an integer: "boxed" (the last `\\boxed{N}`), "answer is" (the last "answer is N" /
"answer: N" / "#### N"), then the fallback "last number" (the last integer anywhere in the text).
Every evaluation record stores its `completion`, so a record can be regraded without the model:

  lenient  all three rules (what the runner graded with: `passed` is reproduced exactly);
  strict   "boxed" and "answer is" only; an output that states no answer is wrong.

For an output cut by the token cap the fallback grades whatever integer the cap happened to leave
last, so the share of correct answers coming from "last number" measures how much a score owes to
where the cap cut the text.  An output "hit the cap" when it did not end with EOS (`ended` false;
every such record has `length == max_new_tokens`).

The gold answer is not stored in the record; it is regenerated from the task id
("arithmetic/d<difficulty>/s<seed>/<index>", `ArithmeticTask.problem_from_id`).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

from mcmc_llm.tasks.arithmetic import ArithmeticTask, extract_integer

GRADINGS = ("lenient", "strict")
FALLBACK_RULE = "last number"


@functools.lru_cache(maxsize=None)
def gold_answer(task_id: str) -> int:
    """The integer answer of the arithmetic problem named `task_id`."""
    problem = ArithmeticTask().problem_from_id(task_id)
    if problem is None:
        raise ValueError(f"not an arithmetic task id: {task_id!r}")
    return int(problem.reference["answer"])


def _check_grading(grading: str) -> None:
    if grading not in GRADINGS:
        raise ValueError(f"grading must be one of {', '.join(GRADINGS)}, got {grading!r}")


def extracted_answer(record: dict[str, Any], grading: str = "strict") -> tuple[int | None, str]:
    """(answer, rule) read from the record's completion; rule is "boxed", "answer is",
    "last number" (lenient only) or "none"."""
    _check_grading(grading)
    if record.get("completion") is None:
        raise ValueError(f"record of {record.get('task_id')!r} / {record.get('method')!r} stores no completion")
    return extract_integer(record["completion"], fallback_last_number=grading == "lenient")


def regrade(record: dict[str, Any], grading: str = "strict") -> dict[str, Any]:
    """A copy of `record` graded again under `grading`: `passed`, `status`, `extracted` and
    `detail` replaced (as the task's grader writes them), plus `rule` (the rule that answered)."""
    value, rule = extracted_answer(record, grading)
    gold = gold_answer(str(record["task_id"]))
    out = dict(record)
    if value is None:
        out.update(passed=False, status="no_answer", extracted=None, rule=rule,
                   detail=f"no integer in \\boxed{{}} or in the text ({grading})")
    else:
        ok = value == gold
        out.update(passed=ok, status="correct" if ok else "wrong", extracted=str(value), rule=rule,
                   detail=f"expected {gold} ({rule})")
    return out


def regraded(records: Sequence[dict[str, Any]], grading: str = "strict") -> list[dict[str, Any]]:
    """Every record regraded under `grading` (the input is not modified)."""
    _check_grading(grading)
    return [regrade(r, grading) for r in records]


def hit_cap(record: dict[str, Any]) -> bool:
    """True when the output was cut by the token cap (it did not end with EOS)."""
    return not bool(record["ended"])


def grading_summary(records: Sequence[dict[str, Any]], method: str) -> dict[str, float]:
    """For one method's records: `outputs`, `lenient` and `strict` accuracy (means over outputs),
    `cap` (share of outputs that hit the cap), `stated` (share of outputs stating an answer a
    strict grader reads: boxed or "answer is N"), `fallback` (share of the leniently correct
    outputs whose answer came from the "last number" fallback; nan when none is correct) and
    `correct_by_rule` (count of leniently correct outputs per rule)."""
    mine = [r for r in records if r["method"] == method]
    if not mine:
        raise ValueError(f"no records of method {method!r}")
    lenient = [regrade(r, "lenient") for r in mine]
    strict = [regrade(r, "strict") for r in mine]
    correct = [r for r in lenient if r["passed"]]
    by_rule: dict[str, int] = {}
    for r in correct:
        by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + 1
    return {
        "outputs": len(mine),
        "lenient": sum(r["passed"] for r in lenient) / len(mine),
        "strict": sum(r["passed"] for r in strict) / len(mine),
        "cap": sum(hit_cap(r) for r in mine) / len(mine),
        "stated": sum(r["extracted"] is not None for r in strict) / len(mine),
        "fallback": by_rule.get(FALLBACK_RULE, 0) / len(correct) if correct else float("nan"),
        "correct_by_rule": by_rule,
    }
