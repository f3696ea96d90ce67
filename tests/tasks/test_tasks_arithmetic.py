"""Arithmetic task: seeded generation, difficulty knobs, integer extraction."""

import pytest

from mcmc_llm.tasks import Problem, get_task
from mcmc_llm.tasks.arithmetic import DEFAULT_DIFFICULTY, extract_integer


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_generation_is_deterministic_and_answers_are_right(difficulty):
    task = get_task("arithmetic", difficulty=difficulty)
    a, b = task.load(seed=3, subset=50), task.load(seed=3, subset=50)
    assert a == b and len(a) == 50
    assert task.load(seed=4, subset=50) != a
    assert len(task.load(seed=3)) == 200
    for p in a:
        assert p.prompt == f"Can you solve the following math problem? {p.reference['question']} Put your final answer within \\boxed{{}}."
        assert isinstance(p.reference["answer"], int) and p.reference["answer"] >= 0
        assert task.problem_from_id(p.task_id) == p
    assert len({p.prompt for p in a}) > 40


def test_known_problems_and_answers():
    p = get_task("arithmetic", difficulty=1).load(seed=0, subset=1)[0]
    assert p.task_id == "arithmetic/d1/s0/0"
    assert p.reference["question"] == "Max has 3 eggs. He buys 3 more eggs. How many eggs does Max have now?"
    assert p.reference["answer"] == 6
    p3 = get_task("arithmetic", difficulty=3).load(seed=0, subset=3)
    assert p3[0].reference["question"].startswith("Anna buys 6 cartons with 8 eggs in each of them.")
    assert p3[0].reference["answer"] == 6 * 8 + 2
    assert p3[2].reference["question"] == "Lucy has 16 books. She loses 9 books and then uses 4 books. How many books does Lucy have now?"
    assert p3[2].reference["answer"] == 3


def test_difficulty_shapes():
    import re

    for p in get_task("arithmetic", difficulty=1).load(seed=1, subset=100):
        a, b = (int(x) for x in re.findall(r"\d+", p.reference["question"]))
        assert 1 <= a <= 9 and 1 <= b <= 9 and p.reference["answer"] == a + b
    ones = [len(re.findall(r"\d+", p.reference["question"])) for p in get_task("arithmetic", difficulty=2).load(subset=100)]
    threes = [len(re.findall(r"\d+", p.reference["question"])) for p in get_task("arithmetic", difficulty=3).load(subset=100)]
    assert set(ones) == {2} and set(threes) == {3}


def test_step_by_step_prompt_option():
    p = get_task("arithmetic", cot=True).load(subset=1)[0]
    assert p.prompt.endswith(" Please reason step by step, and put your final answer within \\boxed{}.")


def test_difficulty_validation():
    assert DEFAULT_DIFFICULTY in (1, 2, 3)
    with pytest.raises(ValueError, match="difficulty"):
        get_task("arithmetic", difficulty=4)
    with pytest.raises(ValueError, match="bad options"):
        get_task("arithmetic", level=2)


@pytest.mark.parametrize("text, value, rule", [
    ("so \\boxed{14}", 14, "boxed"),
    ("\\boxed{\\text{14 eggs}}", 14, "boxed"),
    ("\\boxed{1,234}", 1234, "boxed"),
    ("\\boxed{14.0}", 14, "boxed"),
    ("$\\boxed{-3}$", -3, "boxed"),
    ("first \\boxed{3} then \\boxed{5}", 5, "boxed"),
    ("10 + 4 = 14 eggs.", 14, "last number"),
    ("3 + 4 = 7.\nThe answer is: 7<|im_end|>", 7, "answer is"),
    ("#### 18\nMax has 2 bags", 18, "answer is"),
    ("The answer is 7, since 3 + 4 = 7 and 7 > 2", 7, "answer is"),
    ("\\boxed{x} but 12", 12, "last number"),
    ("no numbers", None, "none"),
])
def test_extract_integer(text, value, rule):
    assert extract_integer(text) == (value, rule)


def test_grade():
    task = get_task("arithmetic")
    p = Problem("x", "q", {"answer": 14})
    assert task.grade(p, "... \\boxed{14}").status == "correct"
    assert task.grade(p, "\\boxed{15}").status == "wrong"
    assert task.grade(p, "so 14").passed
    assert not get_task("arithmetic", fallback_last_number=False).grade(p, "so 14").passed
    assert task.grade(p, "I cannot say").status == "no_answer"


def test_load_from_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question": "1+1?", "answer": 2, "id": "q1"}\n')
    problems = get_task("arithmetic").load(path=str(path))
    assert problems[0].task_id == "q1" and problems[0].reference["answer"] == 2


def test_mixed_difficulties_interleave_each_level_s_own_problems():
    mixed = get_task("arithmetic", difficulty=[2, 3]).load(seed=0, subset=10)
    twos = get_task("arithmetic", difficulty=2).load(seed=0, subset=5)
    threes = get_task("arithmetic", difficulty=3).load(seed=0, subset=5)
    assert [p.task_id for p in mixed[0::2]] == [p.task_id for p in twos]
    assert [p.prompt for p in mixed[1::2]] == [p.prompt for p in threes]
    assert [p.reference["difficulty"] for p in mixed] == [2, 3] * 5
    task = get_task("arithmetic", difficulty=[2, 3])
    assert task.problem_from_id(mixed[3].task_id).prompt == mixed[3].prompt


@pytest.mark.parametrize("bad", [[], [2, 2], [4], [True], "2"])
def test_bad_difficulty_lists_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="difficulty must be 1, 2 or 3"):
        get_task("arithmetic", difficulty=bad)
