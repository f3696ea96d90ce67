"""`mcmc_llm.core.validate`: the one check of numeric arguments and its one wording,
`"{name} must be {allowed}, got {value!r}"`."""

from __future__ import annotations

import argparse
import math
import re

import numpy as np
import pytest

from mcmc_llm.core.validate import (
    argparse_integer, argparse_number, integer, integer_allowed, integer_problem, number, number_allowed,
    number_problem, optional_integer,
)


def test_allowed_wording():
    assert integer_allowed(1) == "a positive integer"
    assert integer_allowed(0) == "a non-negative integer"
    assert integer_allowed(2) == "an integer >= 2"
    assert integer_allowed(-3) == "an integer >= -3"
    assert integer_allowed(None) == "an integer"
    assert number_allowed() == "a finite number"
    assert number_allowed(0.0, strict=True) == "a finite number > 0"
    assert number_allowed(0.5) == "a finite number >= 0.5"
    assert number_allowed(0, strict=True, allow_inf=True) == "a number > 0 or inf"


@pytest.mark.parametrize("value", [1, 7, 2**70, np.int64(3), np.int8(1), np.uint32(5)])
def test_integer_accepts_ints_and_numpy_integers(value):
    result = integer("n", value)
    assert result == int(value) and type(result) is int


def test_integer_minimum():
    assert integer("seed", 0, 0) == 0
    assert integer("vocab_size", 2, 2) == 2
    assert integer("offset", -5, None) == -5


@pytest.mark.parametrize("value", [True, False, 1.0, 2.5, "3", None, [1], 0, -1, np.float64(2.0)])
def test_integer_refuses_with_the_exact_wording(value):
    with pytest.raises(ValueError, match=f"^{re.escape(f'count must be a positive integer, got {value!r}')}$"):
        integer("count", value)


@pytest.mark.parametrize("minimum, allowed", [(0, "a non-negative integer"), (3, "an integer >= 3"), (None, "an integer")])
def test_integer_message_says_what_is_allowed(minimum, allowed):
    bad = -1 if minimum is not None else 1.5
    with pytest.raises(ValueError) as error:
        integer("k", bad, minimum)
    assert str(error.value) == f"k must be {allowed}, got {bad!r}"


def test_optional_integer():
    assert optional_integer("horizon", None) is None
    assert optional_integer("horizon", np.int32(4)) == 4
    for bad in (0, True, 1.5, "2"):
        with pytest.raises(ValueError) as error:
            optional_integer("horizon", bad)
        assert str(error.value) == f"horizon must be a positive integer or None, got {bad!r}"


def test_number():
    assert number("x", 3) == 3.0 and type(number("x", 3)) is float
    assert number("x", np.float32(0.5), 0, strict=True) == 0.5
    assert number("x", 0.0, 0) == 0.0
    assert number("alpha", math.inf, 0, strict=True, allow_inf=True) == math.inf
    cases = [
        (dict(minimum=0, strict=True), 0, "a finite number > 0"),
        (dict(minimum=0, strict=True), -1.5, "a finite number > 0"),
        (dict(minimum=0), -0.1, "a finite number >= 0"),
        (dict(), math.nan, "a finite number"),
        (dict(), math.inf, "a finite number"),
        (dict(), True, "a finite number"),
        (dict(), "1.0", "a finite number"),
        (dict(), None, "a finite number"),
        (dict(minimum=0, strict=True, allow_inf=True), -math.inf, "a number > 0 or inf"),
        (dict(minimum=0, strict=True, allow_inf=True), math.nan, "a number > 0 or inf"),
    ]
    for options, value, allowed in cases:
        with pytest.raises(ValueError) as error:
            number("t", value, **options)
        assert str(error.value) == f"t must be {allowed}, got {value!r}"


def test_problems_return_the_must_be_part_or_none():
    assert integer_problem(4) is None and integer_problem(0, 0) is None
    assert integer_problem(0) == "must be a positive integer"
    assert integer_problem(True, 0) == "must be a non-negative integer"
    assert number_problem(0.5, 0) is None
    assert number_problem(0, 0.0, strict=True) == "must be a finite number > 0"


def test_argparse_types():
    parse = argparse_integer("--chains")
    assert parse("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--chains must be a positive integer, got 0$"):
        parse("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--chains must be a positive integer, got 'x'$"):
        parse("x")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--seed must be a non-negative integer, got -1$"):
        argparse_integer("--seed", 0)("-1")
    alpha = argparse_number("--alpha", 0, strict=True, allow_inf=True)
    assert alpha("inf") == math.inf and alpha("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--alpha must be a number > 0 or inf, got -1.0$"):
        alpha("-1")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--alpha must be a number > 0 or inf, got 'abc'$"):
        alpha("abc")


def test_the_library_and_the_cli_say_the_same():
    """A config, a sampler argument and a CLI flag refuse a bad count with the same words."""
    from mcmc_llm.drivers.power_config import PowerSamplerConfig
    from mcmc_llm.evaluation import checks
    from mcmc_llm.smc import SMCConfig

    with pytest.raises(ValueError, match=r"^mcmc_steps must be a non-negative integer, got -1$"):
        PowerSamplerConfig(mcmc_steps=-1)
    with pytest.raises(ValueError, match=r"^num_particles must be a positive integer, got 0$"):
        SMCConfig(num_particles=0)
    assert checks.integer(0)(-1) == "must be a non-negative integer"
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--mcmc-steps must be a non-negative integer, got -1$"):
        argparse_integer("--mcmc-steps", 0)("-1")


def test_configs_store_numpy_counts_as_ints():
    from mcmc_llm.drivers.power_config import PowerSamplerConfig
    from mcmc_llm.rollout import RolloutConfig

    config = PowerSamplerConfig(block_size=np.int64(2), max_new_tokens=np.int64(4), mcmc_steps=np.int64(0))
    assert (config.block_size, config.max_new_tokens, config.mcmc_steps) == (2, 4, 0)
    assert all(type(v) is int for v in (config.block_size, config.max_new_tokens, config.mcmc_steps))
    assert type(RolloutConfig(horizon=np.int16(3)).horizon) is int
