"""Strict and lenient regrading of stored arithmetic records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcmc_llm.evaluation.grading import extracted_answer, gold_answer, grading_summary, hit_cap, regrade, regraded
from mcmc_llm.tasks.arithmetic import ArithmeticTask

TASK = "arithmetic/d1/s0/0"
RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results" / "cpu"


def record(completion, *, ended=True, method="m", task_id=TASK, passed=None):
    return {"task_id": task_id, "method": method, "completion": completion, "ended": ended, "passed": passed}


def test_gold_answer_is_the_tasks_answer():
    problem = ArithmeticTask().load(seed=0, subset=3)[2]
    assert gold_answer(problem.task_id) == problem.reference["answer"]
    with pytest.raises(ValueError, match="not an arithmetic task id"):
        gold_answer("math500/7")


def test_strict_grading_ignores_the_last_number_fallback():
    gold = gold_answer(TASK)
    boxed, stated, trailing = record(f"so \\boxed{{{gold}}}"), record(f"The answer is {gold}."), record(f"... = {gold} eggs", ended=False)
    for r, rule in ((boxed, "boxed"), (stated, "answer is")):
        assert regrade(r, "strict")["passed"] and regrade(r, "lenient")["passed"]
        assert regrade(r, "strict")["rule"] == rule
    lenient, strict = regrade(trailing, "lenient"), regrade(trailing, "strict")
    assert lenient["passed"] and lenient["rule"] == "last number" and lenient["detail"] == f"expected {gold} (last number)"
    assert not strict["passed"] and strict["status"] == "no_answer" and strict["extracted"] is None
    wrong = regrade(record(f"The answer is {gold + 1}, not {gold}"), "strict")
    assert wrong["status"] == "wrong" and wrong["extracted"] == str(gold + 1)
    assert extracted_answer(trailing, "strict") == (None, "none")
    assert "rule" not in trailing and trailing["passed"] is None  # the input is not modified
    with pytest.raises(ValueError, match="grading must be one of"):
        regraded([boxed], "loose")
    with pytest.raises(ValueError, match="stores no completion"):
        regrade({"task_id": TASK, "method": "m"})


def test_grading_summary_counts_cap_and_fallback():
    gold = gold_answer(TASK)
    recs = [record(f"\\boxed{{{gold}}}"), record(f"{gold}", ended=False), record(f"{gold + 1}", ended=False), record("none", ended=False)]
    summary = grading_summary(recs, "m")
    assert summary["outputs"] == 4 and summary["lenient"] == 0.5 and summary["strict"] == 0.25
    assert summary["cap"] == 0.75 and summary["fallback"] == 0.5 and summary["stated"] == 0.25
    assert summary["correct_by_rule"] == {"boxed": 1, "last number": 1}
    assert hit_cap(recs[1]) and not hit_cap(recs[0])


@pytest.mark.skipif(not (RESULTS / "main72.jsonl").exists(), reason="no committed CPU results")
def test_lenient_regrading_reproduces_the_committed_grades():
    # main72.jsonl: the main comparison the figures read (its first 24 problems are main.jsonl's)
    recs = [json.loads(line) for line in (RESULTS / "main72.jsonl").read_text().splitlines()[::7]]
    again = regraded(recs, "lenient")
    assert [r["passed"] for r in again] == [r["passed"] for r in recs]
    assert all(s["passed"] <= l["passed"] for s, l in zip(regraded(recs, "strict"), again))  # strict-correct => lenient-correct
