"""Shared helpers of the evaluation tests: a tiny fake task for toy models, and config writers.

`FakeTask` prompts are token-id strings ("1 2") for `toy:` models; a completion passes when its
first token id equals the problem's answer.  It is importable by path
(`tests.evaluation.test_evaluation_support:FakeTask`), which is how configs, subprocesses and Ray workers
reach it.
"""

from __future__ import annotations

import time
from pathlib import Path

from mcmc_llm.tasks import GradeResult, Problem


class FakeTask:
    name = "fake"

    def __init__(self, problems: int = 6, grade_delay: float = 0.0, vocab: int = 5):
        self.count, self.grade_delay, self.vocab = problems, grade_delay, vocab

    def load(self, *, path=None, subset=None, seed=0) -> list[Problem]:
        out = []
        for i in range(self.count):
            a, b = 1 + (i + seed) % (self.vocab - 1), 1 + (2 * i + seed) % (self.vocab - 1)
            out.append(Problem(f"fake/{i}", f"{a} {b}", {"answer": str(1 + (a + b) % (self.vocab - 1))}))
        return out[:subset] if subset else out

    def extract_answer(self, completion: str) -> str | None:
        pieces = completion.split()
        return pieces[0] if pieces else None

    def grade(self, problem: Problem, completion: str) -> GradeResult:
        if self.grade_delay:
            time.sleep(self.grade_delay)
        answer = self.extract_answer(completion)
        if answer is None:
            return GradeResult(False, "no_answer")
        passed = answer == problem.reference["answer"]
        return GradeResult(passed, "correct" if passed else "wrong", extracted=answer)


TASK = "tests.evaluation.test_evaluation_support:FakeTask"

METHODS = """
[[methods]]
name = "base"
kind = "base"

[[methods]]
name = "cold"
kind = "low_temperature"
alpha = 4.0

[[methods]]
name = "greedy"
kind = "greedy"
samples = 1

[[methods]]
name = "power"
kind = "power"
alpha = 4.0
block_size = 4
mcmc_steps = 2

[[methods]]
name = "bon"
kind = "best_of_n"
match = "power"

[[methods]]
name = "vote"
kind = "majority_vote"
n = 3
"""


def write_config(directory: Path, *, problems: int = 4, samples: int = 4, max_new_tokens: int = 8, batch_size: int = 1,
                 workers: int = 1, grade_delay: float = 0.0, methods: str = METHODS, output: str = "results.jsonl",
                 model: str = "toy:bigram", problems_per_call: int | str = 1, sampling_extra: str = "") -> Path:
    text = f"""
[model]
spec = "{model}"

[task]
name = "{TASK}"
options = {{ problems = {problems}, grade_delay = {grade_delay} }}

[sampling]
max_new_tokens = {max_new_tokens}
samples_per_problem = {samples}
seed = 7
batch_size = {batch_size}
problems_per_call = {problems_per_call if isinstance(problems_per_call, int) else f'"{problems_per_call}"'}
{sampling_extra}

[output]
path = "{(directory / output).as_posix()}"

[scaleout]
workers = {workers}
{methods}
"""
    path = directory / "config.toml"
    path.write_text(text)
    return path


def test_fake_task_grades_first_token():
    task = FakeTask(problems=2)
    problem = task.load()[0]
    answer = problem.reference["answer"]
    assert task.grade(problem, f"{answer} 3 0").passed
    assert task.grade(problem, "").status == "no_answer"
