"""Task names -> task classes: `get_task("math500", cot=True)`.

Classes are imported lazily, so using one task never imports another's optional dependencies.
"""

from __future__ import annotations

import importlib

from mcmc_llm.tasks.base import Task

__all__ = ["get_task", "task_names", "canonical_task_name", "prompt_formats", "TASKS", "PROMPT_FORMATS", "DEFAULT_PROMPT_FORMAT"]

#: name -> (module, class, one-line description)
TASKS: dict[str, tuple[str, str, str]] = {
    "math500": ("mcmc_llm.tasks.math500", "Math500Task", "MATH500 competition math, \\boxed{} answers, math-verify grader"),
    "humaneval": ("mcmc_llm.tasks.humaneval", "HumanEvalTask", "HumanEval Python functions, unit tests run in the sandbox"),
    "gpqa": ("mcmc_llm.tasks.gpqa", "GPQATask", "GPQA-Diamond multiple choice (local CSV), seeded choice order"),
    "alpacaeval": ("mcmc_llm.tasks.alpacaeval", "AlpacaEvalTask", "AlpacaEval 2.0 instructions; outputs for alpaca_eval"),
    "arithmetic": ("mcmc_llm.tasks.arithmetic", "ArithmeticTask", "seeded arithmetic word problems, integer answers (CPU)"),
}


#: The prompt formats each built-in task accepts (its `prompt_format` constructor option).
#: "default" is the task's own prompt (see each task's module docstring); humaneval's
#: "write_function" is the reference code's HumanEval prompt for Phi-3.5-mini-instruct
#: (`mcmc_llm.tasks.humaneval.write_function_prompt`); math500's "verbatim" is the reference code's
#: MATH prompt as it reaches the model, with its literal `\\boxed{{}}` (`mcmc_llm.tasks.math500`).
DEFAULT_PROMPT_FORMAT = "default"
PROMPT_FORMATS: dict[str, tuple[str, ...]] = {
    "math500": (DEFAULT_PROMPT_FORMAT, "verbatim"),
    "humaneval": (DEFAULT_PROMPT_FORMAT, "write_function"),
    "gpqa": (DEFAULT_PROMPT_FORMAT,),
    "alpacaeval": (DEFAULT_PROMPT_FORMAT,),
    "arithmetic": (DEFAULT_PROMPT_FORMAT,),
}

_ALIASES = {"math": "math500", "gpqadiamond": "gpqa", "alpacaeval2": "alpacaeval", "arith": "arithmetic"}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def canonical_task_name(name: str) -> str | None:
    """The registry name `name` refers to (case, `-` and `_` ignored; aliases such as "math"),
    or None when it names no built-in task."""
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    return key if key in TASKS else None


def prompt_formats(name: str) -> tuple[str, ...] | None:
    """The prompt formats of the built-in task `name`; None when `name` is not a built-in task."""
    key = canonical_task_name(name)
    return None if key is None else PROMPT_FORMATS[key]


def get_task(name: str, **options) -> Task:
    """Build the task called `name` with constructor `options` (e.g. difficulty=2 for arithmetic).

    Raises ValueError for an unknown name (listing the known ones) or unknown options.
    """
    key = canonical_task_name(name)
    if key is None:
        listing = ", ".join(f"{n} ({d})" for n, (_, _, d) in TASKS.items())
        raise ValueError(f"unknown task {name!r}; known tasks: {listing}")
    module_name, class_name, _ = TASKS[key]
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**options)
    except TypeError as error:
        raise ValueError(f"task {key!r}: bad options {sorted(options)}: {error}") from None
