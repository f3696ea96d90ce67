"""Checks of TOML values, and a reader for one table that collects every problem.

A `Check` maps a value to a problem description, or None when the value is fine.  `Table` reads
the keys of one table with their checks, records each problem as `key.path: problem, got VALUE`
and, at `done()`, reports unknown keys with a "did you mean" hint and the allowed keys.  Used by
`mcmc_llm.evaluation.config` for every section and by `mcmc_llm.evaluation.method_config` for the
`[[methods]]` tables.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Mapping

from mcmc_llm.core.validate import integer_problem, number_problem

Check = Callable[[Any], str | None]  # returns a problem description, or None if the value is fine


def integer(minimum: int | None) -> Check:
    """An integer >= `minimum` (`mcmc_llm.core.validate.integer_problem`)."""
    return lambda value: integer_problem(value, minimum)


def number(minimum: float | None = None, *, strict: bool = False, allow_inf: bool = False) -> Check:
    """A number, not NaN, above `minimum` (`mcmc_llm.core.validate.number_problem`)."""
    return lambda value: number_problem(value, minimum, strict=strict, allow_inf=allow_inf)


def string(value):
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"


def boolean(value):
    if not isinstance(value, bool):
        return "must be true or false"


def choice(allowed) -> Check:
    def check(value):
        if value not in allowed:
            return f"must be one of {', '.join(map(str, allowed))}"
    return check


def table(value):
    if not isinstance(value, dict):
        return "must be a table"


def alpha(value):
    if value in ("inf", "infinity"):
        return None
    return number(0.0, strict=True, allow_inf=True)(value)


def finite_alpha(value):
    """alpha of smc and rollout: a finite number > 0."""
    return number_problem(value, 0, strict=True)


def fraction(value):
    return number(0.0)(value) or (None if value <= 1 else "must be in [0, 1]")


def top_p(value):
    return number(0.0, strict=True)(value) or (None if value <= 1 else "must be in (0, 1]")


def token_ids(value):
    """A non-empty list of distinct token ids (integers >= 0), e.g. an EOS set `[32000]`."""
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of token ids (integers >= 0), e.g. [32000]"
    bad = [item for item in value if integer_problem(item, 0)]
    if bad:
        return f"must be a non-empty list of token ids (integers >= 0); {bad[0]!r} is not a token id"
    repeated = sorted({item for item in value if value.count(item) > 1})
    if repeated:
        return f"must list each token id once; {repeated[0]} is repeated"


class Table:
    """Reads keys of one table, records problems under `path`, and reports unknown keys at `done()`."""

    def __init__(self, table: Mapping[str, Any], path: str, problems: list[str]):
        self.table, self.path, self.problems = dict(table), path, problems
        self.known: list[str] = []

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, check: Check, default: Any = None, *, required: bool = False) -> Any:
        self.known.append(key)
        if key not in self.table:
            if required:
                self.problems.append(f"{self.key(key)}: required key is missing")
            return default
        value = self.table[key]
        problem = check(value)
        if problem:
            self.problems.append(f"{self.key(key)}: {problem}, got {value!r}")
            return default
        if check is alpha and isinstance(value, str):
            return math.inf
        return value

    def has(self, key: str) -> bool:
        return key in self.table

    def done(self, allowed: list[str] | None = None) -> None:
        allowed = allowed if allowed is not None else self.known
        for key in self.table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problems.append(f"{self.key(key)}: unknown key{hint}; allowed: {', '.join(allowed)}")
