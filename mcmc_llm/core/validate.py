"""Checks of numeric arguments (counts, sizes, seeds, exponents), with one wording for every message:

    {name} must be {allowed}, got {value!r}

`allowed` says what the check accepts:

    integers (`integer_allowed`)   minimum 1: "a positive integer"     minimum 0: "a non-negative integer"
                                   minimum k: "an integer >= k"         no minimum: "an integer"
                                   "... or None" where None is allowed (`optional_integer`)
    numbers (`number_allowed`)     "a finite number", "a finite number > m", "a finite number >= m";
                                   "a number > m or inf" where +inf is allowed (`allow_inf`)

An integer is a Python int or a numpy integer, never a bool (True is not 1 here), a float or a
string; a number is an int or a float (numpy's too), never a bool, NaN or a string.

* `integer`, `optional_integer`, `number`: the value checked (int, int or None, float), else ValueError;
* `integer_problem`, `number_problem`: the "must be ..." part, or None when the value is fine, for
  checks that collect every problem before reporting (the config files, `mcmc_llm.evaluation.checks`);
* `argparse_integer`, `argparse_number`: argparse `type=` functions with the same message
  (ArgumentTypeError, which argparse turns into a one-line usage error).

This module is part of `mcmc_llm.core`: it imports the standard library only.
"""

from __future__ import annotations

import argparse
import math
import numbers
from typing import Any, Callable


def _show(bound: float) -> str:
    """A bound as written in a message: 0 for 0.0, 0.5 for 0.5."""
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def integer_allowed(minimum: int | None = 1) -> str:
    """What an integer check with `minimum` accepts (module docstring)."""
    if minimum is None:
        return "an integer"
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return f"an integer >= {minimum}"


def number_allowed(minimum: float | None = None, *, strict: bool = False, allow_inf: bool = False) -> str:
    """What a number check accepts (module docstring): `minimum` the bound, `strict` for `>`, `allow_inf` for +inf."""
    bound = "" if minimum is None else f" {'>' if strict else '>='} {_show(minimum)}"
    if not allow_inf:
        return f"a finite number{bound}"
    return f"a number{bound} or inf" if bound else "a number or +-inf"


def integer_problem(value: Any, minimum: int | None = 1) -> str | None:
    """"must be {allowed}" when `value` is not an integer >= `minimum` (None: any integer), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        return f"must be {integer_allowed(minimum)}"
    return None


def number_problem(value: Any, minimum: float | None = None, *, strict: bool = False, allow_inf: bool = False) -> str | None:
    """"must be {allowed}" when `value` is not a number in the range (NaN never is), else None.

    minimum: the lower bound (None: none); strict: `value > minimum` instead of `>=`;
    allow_inf: infinite values pass (the bound still applies: -inf fails any bound).
    """
    fine = (
        not isinstance(value, bool) and isinstance(value, numbers.Real) and not math.isnan(value)
        and (allow_inf or not math.isinf(value))
        and (minimum is None or (value > minimum if strict else value >= minimum))
    )
    return None if fine else f"must be {number_allowed(minimum, strict=strict, allow_inf=allow_inf)}"


def _fail(name: str, problem: str, value: Any) -> ValueError:
    return ValueError(f"{name} {problem}, got {value!r}")


def integer(name: str, value: Any, minimum: int | None = 1) -> int:
    """`value` as an int when it is an integer >= `minimum` (None: any integer); else a ValueError
    `"{name} must be {allowed}, got {value!r}"`."""
    problem = integer_problem(value, minimum)
    if problem:
        raise _fail(name, problem, value)
    return int(value)


def optional_integer(name: str, value: Any, minimum: int | None = 1) -> int | None:
    """None, or `value` as an int when it is an integer >= `minimum`; else a ValueError whose
    allowed part ends in "or None"."""
    if value is None:
        return None
    problem = integer_problem(value, minimum)
    if problem:
        raise _fail(name, f"{problem} or None", value)
    return int(value)


def number(name: str, value: Any, minimum: float | None = None, *, strict: bool = False, allow_inf: bool = False) -> float:
    """`value` as a float when it passes `number_problem`; else a ValueError
    `"{name} must be {allowed}, got {value!r}"`."""
    problem = number_problem(value, minimum, strict=strict, allow_inf=allow_inf)
    if problem:
        raise _fail(name, problem, value)
    return float(value)


def argparse_integer(flag: str, minimum: int | None = 1) -> Callable[[str], int]:
    """An argparse `type=`: the flag's text as an int >= `minimum`, else an ArgumentTypeError
    `"{flag} must be {allowed}, got {value!r}"` (the text when it is not an integer at all)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be {integer_allowed(minimum)}, got {text!r}") from None
        problem = integer_problem(value, minimum)
        if problem:
            raise argparse.ArgumentTypeError(f"{flag} {problem}, got {value!r}")
        return value

    return parse


def argparse_number(flag: str, minimum: float | None = None, *, strict: bool = False,
                    allow_inf: bool = False) -> Callable[[str], float]:
    """An argparse `type=`: the flag's text as a float that passes `number_problem` ("inf" is
    float("inf")), else an ArgumentTypeError `"{flag} must be {allowed}, got {value!r}"`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = text
        problem = number_problem(value, minimum, strict=strict, allow_inf=allow_inf)
        if problem:
            raise argparse.ArgumentTypeError(f"{flag} {problem}, got {value!r}")
        return value

    return parse


__all__ = [
    "argparse_integer", "argparse_number", "integer", "integer_allowed", "integer_problem", "number",
    "number_allowed", "number_problem", "optional_integer",
]
