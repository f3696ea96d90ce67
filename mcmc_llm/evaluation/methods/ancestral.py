"""Ancestral sampling methods: independent samples token by token from a fixed `SamplingRule`.

* `base`             x ~ p                                   (tau = 1, full support)
* `low_temperature`  x_t ~ p(x_t | x_<t)^(1/tau), tau = 1/alpha by default
* `greedy`           x_t = argmax p(x_t | x_<t)              (SamplingRule(0.0))
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from typing import ClassVar

from mcmc_llm.core.validate import integer, number
from mcmc_llm.evaluation.methods.base import Method, draw
from mcmc_llm.lm.generation import SamplingRule


class _Ancestral(Method):
    """Independent samples token by token from a fixed `SamplingRule`."""

    @abstractmethod
    def rule(self) -> SamplingRule: ...

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        rule = self.rule()
        rows = draw(lm, prompts, samples_per_prompt, self.max_new_tokens, rule, generator)
        return [[d.sample(temperature=rule.temperature) for d in row] for row in rows]


def check_rule_fields(method) -> None:
    """Validate `max_new_tokens` and the fields of `method.rule()` (temperature, top_k, top_p)."""
    integer("max_new_tokens", method.max_new_tokens)
    method.rule()  # validates temperature, top_k, top_p


@dataclasses.dataclass(frozen=True)
class BaseSampling(_Ancestral):
    """x ~ p: temperature 1, full support unless top_k / top_p truncate it."""

    kind: ClassVar[str] = "base"
    max_new_tokens: int = 512
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        check_rule_fields(self)

    def rule(self) -> SamplingRule:
        return SamplingRule(1.0, self.top_k, self.top_p)


def low_temperature(alpha: float, temperature: float | None) -> float:
    """The temperature of low-temperature sampling: `temperature`, else 1/alpha (0.25 for alpha = inf)."""
    number("alpha", alpha, 0, strict=True, allow_inf=True)
    if temperature is not None:
        return temperature
    return 0.25 if math.isinf(alpha) else 1.0 / alpha


@dataclasses.dataclass(frozen=True)
class LowTemperatureSampling(_Ancestral):
    """x_t ~ p(x_t | x_<t)^(1/tau) normalised per token; tau = `temperature`, default 1/alpha."""

    kind: ClassVar[str] = "low_temperature"
    max_new_tokens: int = 512
    alpha: float = 4.0
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        check_rule_fields(self)

    def rule(self) -> SamplingRule:
        return SamplingRule(low_temperature(self.alpha, self.temperature), self.top_k, self.top_p)


@dataclasses.dataclass(frozen=True)
class GreedyDecoding(_Ancestral):
    """x_t = argmax_v p(v | x_<t) (SamplingRule(0.0)); every sample of a prompt is the same."""

    kind: ClassVar[str] = "greedy"
    max_new_tokens: int = 512

    def __post_init__(self):
        integer("max_new_tokens", self.max_new_tokens)

    def rule(self) -> SamplingRule:
        return SamplingRule(0.0)
