"""Task names -> task classes: `get_task("math500", cot=True)`.

Classes are imported lazily, so using one task never imports another's optional dependencies.
"""

from __future__ import annotations

import importlib

from mcmc_llm.tasks.base import Task

__all__ = ["get_task", "task_names", "TASKS"]

#: name -> (module, class, one-line description)
TASKS: dict[str, tuple[str, str, str]] = {
    "math500": ("mcmc_llm.tasks.math500", "Math500Task", "MATH500 competition math, \\boxed{} answers, math-verify grader"),
    "humaneval": ("mcmc_llm.tasks.humaneval", "HumanEvalTask", "HumanEval Python functions, unit tests run in the sandbox"),
    "gpqa": ("mcmc_llm.tasks.gpqa", "GPQATask", "GPQA-Diamond multiple choice (local CSV), seeded choice order"),
    "alpacaeval": ("mcmc_llm.tasks.alpacaeval", "AlpacaEvalTask", "AlpacaEval 2.0 instructions; outputs for alpaca_eval"),
    "arithmetic": ("mcmc_llm.tasks.arithmetic", "ArithmeticTask", "seeded arithmetic word problems, integer answers (CPU)"),
}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str, **options) -> Task:
    """Build the task called `name` with constructor `options` (e.g. difficulty=2 for arithmetic).

    Raises ValueError for an unknown name (listing the known ones) or unknown options.
    """
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    aliases = {"math": "math500", "gpqadiamond": "gpqa", "alpacaeval2": "alpacaeval", "arith": "arithmetic"}
    key = aliases.get(key, key)
    if key not in TASKS:
        listing = ", ".join(f"{n} ({d})" for n, (_, _, d) in TASKS.items())
        raise ValueError(f"unknown task {name!r}; known tasks: {listing}")
    module_name, class_name, _ = TASKS[key]
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**options)
    except TypeError as error:
        raise ValueError(f"task {key!r}: bad options {sorted(options)}: {error}") from None
