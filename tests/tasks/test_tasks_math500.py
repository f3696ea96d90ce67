"""MATH500 task: loading local files, the paper's prompt, \\boxed extraction and math-verify grading."""

import json

import pytest

from mcmc_llm.tasks import Problem, get_task
from mcmc_llm.tasks.math500 import MATH_COT, MATH_PROMPT, format_prompt, last_boxed

pytest.importorskip("math_verify")

RECORDS = [
    {"prompt": "Convert the point $(0,3)$ to polar coordinates.", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
     "source": "math", "id": "test/precalculus/807.json"},
    {"prompt": "What is $1/2$ as a fraction?", "answer": "\\frac{1}{2}", "id": "test/algebra/1.json"},
    {"prompt": "Solve for x.", "answer": "(1, 2]", "unique_id": "test/algebra/2.json"},
]


def _problem(answer: str) -> Problem:
    return Problem("t", format_prompt("Q?"), {"answer": answer})


@pytest.fixture
def task():
    return get_task("math500")


def test_load_json_list_and_jsonl_same_problems(tmp_path, task):
    as_json = tmp_path / "math.json"
    as_json.write_text(json.dumps(RECORDS))
    as_jsonl = tmp_path / "math.jsonl"
    as_jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    a, b = task.load(path=str(as_json)), task.load(path=str(as_jsonl))
    assert a == b
    assert [p.task_id for p in a] == ["test/precalculus/807.json", "test/algebra/1.json", "test/algebra/2.json"]
    assert a[0].reference["answer"] == RECORDS[0]["answer"] and a[0].reference["source"] == "math"
    assert [p.task_id for p in task.load(path=str(as_json), subset=2)] == [p.task_id for p in a[:2]]
    json.dumps([dict(p.reference) for p in a])  # JSON-serialisable


def test_prompt_is_the_papers(tmp_path, task):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(RECORDS[:1]))
    prompt = task.load(path=str(path))[0].prompt
    assert prompt == MATH_PROMPT + RECORDS[0]["prompt"] + MATH_COT
    assert prompt.endswith("Please reason step by step, and put your final answer within \\boxed{}.")
    assert get_task("math500", cot=False).load(path=str(path))[0].prompt.endswith(" Put your final answer within \\boxed{}.")


def test_bad_records_and_missing_file(tmp_path, task):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"prompt": "no answer"}]))
    with pytest.raises(ValueError, match="answer"):
        task.load(path=str(path))
    with pytest.raises(ValueError, match="not found"):
        task.load(path=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="subset"):
        task.load(path=_write(tmp_path, RECORDS), subset=-1)


def _write(tmp_path, records):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(records))
    return str(path)


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{5}.", "5"),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\fbox{7}", "7"),
    ("The answer is $\\boxed 9$.", "9"),
    ("no box here", None),
    ("\\boxed{unclosed", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("gold, predicted", [
    ("\\frac{1}{2}", "1/2"),
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{1}{2}", "\\dfrac{1}{2}"),
    ("\\frac12", "\\tfrac{1}{2}"),
    ("(1, 2]", "(1,2]"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("\\{1, 2\\}", "\\{2, 1\\}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}"),
    ("p - q", "-q + p"),
    ("10", "10.0"),
])
def test_equivalent_forms_are_correct(task, gold, predicted):
    result = task.grade(_problem(gold), f"Work... so the answer is \\boxed{{{predicted}}}.")
    assert result.passed and result.status == "correct", result
    assert result.extracted == predicted


@pytest.mark.parametrize("gold, predicted", [
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("(1, 2]", "[1, 2]"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)"),
    ("2\\sqrt{2}", "\\sqrt{2}"),
    ("\\{1, 2\\}", "\\{1, 3\\}"),
])
def test_wrong_answers(task, gold, predicted):
    result = task.grade(_problem(gold), f"\\boxed{{{predicted}}}")
    assert not result.passed and result.status == "wrong"


def test_last_box_counts_and_missing_box_is_no_answer(task):
    assert task.grade(_problem("4"), "first \\boxed{3}, corrected: \\boxed{4}").passed
    assert not task.grade(_problem("4"), "first \\boxed{4}, corrected: \\boxed{3}").passed
    result = task.grade(_problem("4"), "The answer is 4.")
    assert result.status == "no_answer" and not result.passed and result.extracted is None
    assert task.grade(_problem("4"), "").status == "no_answer"


def test_hub_without_datasets_is_a_clear_error(task, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ValueError, match="path="):
        task.load()
