"""Evaluation tasks: datasets, paper-faithful prompts, graders and pass@k.

    from mcmc_llm.tasks import get_task
    task = get_task("math500")
    problems = task.load(path="MATH500.json", subset=50)
    result = task.grade(problems[0], completion)

Names: math500, humaneval, gpqa, alpacaeval, arithmetic (see docs/tasks.md).
"""

from mcmc_llm.tasks.base import GRADE_STATUSES, GradeResult, Problem, Task, pass_at_k

__all__ = ["GRADE_STATUSES", "GradeResult", "Problem", "Task", "pass_at_k", "get_task", "task_names"]


def get_task(name: str, **options) -> Task:
    """Build a task by name (see `mcmc_llm.tasks.registry`)."""
    from mcmc_llm.tasks.registry import get_task as _get_task

    return _get_task(name, **options)


def task_names() -> tuple[str, ...]:
    from mcmc_llm.tasks.registry import task_names as _task_names

    return _task_names()
