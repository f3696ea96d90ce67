"""GPQA task: local CSV, seeded per-question choice shuffling, answer-letter extraction."""

import csv

import pytest

from mcmc_llm.tasks import Problem, get_task
from mcmc_llm.tasks.gpqa import extract_choice, shuffle_seed

COLUMNS = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]


@pytest.fixture
def csv_path(tmp_path):
    path = tmp_path / "gpqa_diamond.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS + ["Subdomain"])
        writer.writeheader()
        for i in range(12):
            writer.writerow({"Record ID": f"rec{i}", "Question": f"Question {i}?", "Correct Answer": f"right {i}",
                             "Incorrect Answer 1": f"wrong1 {i}", "Incorrect Answer 2": f"wrong2 {i}",
                             "Incorrect Answer 3": f"wrong3 {i}", "Subdomain": "Physics"})
    return str(path)


def test_load_and_prompt(csv_path):
    problems = get_task("gpqa").load(path=csv_path)
    assert [p.task_id for p in problems] == [f"rec{i}" for i in range(12)]
    p = problems[0]
    letter = p.reference["correct_letter"]
    assert f"{letter}) right 0" in p.prompt
    assert p.prompt.startswith("Answer the following multiple choice question.")
    assert "'\\boxed{$LETTER}'" in p.prompt and "\n\nQuestion 0?\n\nA) " in p.prompt
    assert sorted(p.reference["choices"]) == sorted(["right 0", "wrong1 0", "wrong2 0", "wrong3 0"])
    assert p.reference["choices"]["ABCD".index(letter)] == "right 0"


def test_shuffle_is_deterministic_and_seed_dependent(csv_path):
    task = get_task("gpqa")
    a, b = task.load(path=csv_path, seed=0), task.load(path=csv_path, seed=0)
    assert a == b
    letters = [p.reference["correct_letter"] for p in a]
    assert len(set(letters)) > 1  # not always the same position
    other = [p.reference["correct_letter"] for p in task.load(path=csv_path, seed=1)]
    assert other != letters
    assert shuffle_seed(0, "rec0") == shuffle_seed(0, "rec0") != shuffle_seed(1, "rec0")
    assert [p.task_id for p in task.load(path=csv_path, subset=4)] == ["rec0", "rec1", "rec2", "rec3"]


def test_missing_path_and_columns(tmp_path):
    with pytest.raises(ValueError, match="gated"):
        get_task("gpqa").load()
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Answer\nq,a\n")
    with pytest.raises(ValueError, match="Correct Answer"):
        get_task("gpqa").load(path=str(bad))


@pytest.mark.parametrize("text, letter", [
    ("Reasoning...\nThe answer is (C)", "C"),
    ("Answer: C", "C"),
    ("so \\boxed{C}", "C"),
    ("\\boxed{\\text{(B)}}", "B"),
    ("\\boxed{D) wrong3}", "D"),
    ("Final answer: **D**", "D"),
    ("I first thought A. Answer: B.", "B"),
    ("The answer is (A). Wait, the answer is (D).", "D"),
    ("...\n(B)", "B"),
    ("the answer is a bit unclear", None),
    ("The answer is Avogadro's number", None),
    ("", None),
])
def test_extract_choice(text, letter):
    assert extract_choice(text) == letter


def test_grade(csv_path):
    task = get_task("gpqa")
    p = task.load(path=csv_path)[0]
    gold = p.reference["correct_letter"]
    wrong = next(x for x in "ABCD" if x != gold)
    assert task.grade(p, f"... \\boxed{{{gold}}}").status == "correct"
    result = task.grade(p, f"The answer is ({wrong})")
    assert result.status == "wrong" and result.extracted == wrong and gold in result.detail
    assert task.grade(p, "I don't know").status == "no_answer"
    assert isinstance(p, Problem)
