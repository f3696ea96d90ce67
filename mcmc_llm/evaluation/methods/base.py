"""The `Method` interface of the evaluation runner and what every method shares.

    method.generate(lm, prompts, samples_per_prompt, seed, *, answer_of=None)
        -> list (per prompt) of list (per sample) of MethodSample

`generate` validates the request, runs the method's `_generate` with a generator seeded by
`seed`, and fills in every sample's `compute`: the LM's `ComputeCounter` spent by the call,
divided by the number of samples returned.  `draw` is the one batched call to
`sample_continuations` that the ancestral and best-of-N methods share.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Sequence

import torch

from mcmc_llm.core.deprecation import deprecated_name
from mcmc_llm.core.random import Streams, make_generator
from mcmc_llm.core.validate import integer
from mcmc_llm.lm.generation import SamplingRule, sample_continuations
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch, spent

AnswerFn = Callable[[Sequence[int]], "str | None"]


@dataclasses.dataclass(frozen=True)
class MethodSample:
    """One output of a method: generated `tokens` (EOS included when emitted), `log_p` = sum of the
    base model's log p over them, `length`, `ended` (with EOS), method `diagnostics`, `compute`:
    the LM counters spent by the generate call, divided by the number of samples it returned, and
    `entropy` = sum over the tokens of the entropy H(p(. | prefix)) of the base model's next-token
    distribution (its mean per token is the confidence measure of the results figures)."""

    tokens: list[int]
    log_p: float
    length: int
    ended: bool
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)
    compute: dict[str, float] = dataclasses.field(default_factory=dict)
    entropy: float = math.nan


@dataclasses.dataclass(frozen=True)
class Draw:
    """One continuation from `draw`: its tokens, sum of log p, whether it ended with EOS, and its
    summed next-token entropy."""

    tokens: list[int]
    log_p: float
    ended: bool
    entropy: float

    @property
    def length(self) -> int:
        return len(self.tokens)

    def sample(self, **diagnostics) -> MethodSample:
        """This draw as a method's output, with `diagnostics`."""
        return MethodSample(self.tokens, self.log_p, self.length, self.ended, diagnostics, entropy=self.entropy)


def _check_request(prompts: Sequence[Sequence[int]], samples_per_prompt: int, seed: int | Sequence[int]) -> None:
    if len(prompts) == 0:
        raise ValueError("generate needs at least one prompt, got none")
    integer("samples_per_prompt", samples_per_prompt)
    if isinstance(seed, (list, tuple)):
        if len(seed) != len(prompts):
            raise ValueError(f"seed: one per prompt expected ({len(prompts)}), got {len(seed)}")
        for value in seed:
            make_generator(value)  # validates the seed
    else:
        make_generator(seed)


def row_streams(seeds: Sequence[int], rows_per_prompt: int) -> Streams:
    """Per-prompt seeds as per-row streams: row j of prompt i keyed by (seeds[i], 0, j)."""
    per_row = [seed for seed in seeds for _ in range(rows_per_prompt)]
    return Streams.for_chains(per_row, 0, torch.arange(len(per_row)) % rows_per_prompt)


def draw(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    count: int,
    max_new_tokens: int,
    rule: SamplingRule,
    generator: torch.Generator | list[int],
) -> list[list[Draw]]:
    """`count` continuations of every prompt from one batched `sample_continuations` call;
    `generator`: the call's generator, or one seed per prompt (`row_streams`)."""
    rows = [list(prompt) for prompt in prompts for _ in range(count)]
    contexts = TokenBatch.from_lists(rows, device=lm.device)
    source = row_streams(generator, count) if isinstance(generator, list) else generator
    continuation = sample_continuations(lm, contexts, max_new_tokens, rule, source)
    tokens = continuation.tokens.to_lists()
    inside = torch.arange(continuation.log_p.shape[1], device=continuation.log_p.device)[None] < continuation.tokens.lengths[:, None]
    log_p = torch.where(inside, continuation.log_p, 0.0).sum(-1).tolist()
    entropy = torch.where(inside, continuation.entropy, 0.0).sum(-1).tolist()
    ended = continuation.ended.tolist()
    flat = [Draw(tokens[r], float(log_p[r]), bool(ended[r]), float(entropy[r])) for r in range(len(rows))]
    return [flat[i * count : (i + 1) * count] for i in range(len(prompts))]


def _share(counts: dict[str, int], parts: int) -> dict[str, float]:
    """Counters split evenly over the samples of one call (exact when the call made one sample)."""
    return {key: value // parts if value % parts == 0 else value / parts for key, value in counts.items()}


class Method(ABC):
    """A way of producing samples for prompts.  Subclasses are frozen dataclasses whose fields are
    the method's settings (the config keys of its kind)."""

    kind: ClassVar[str]
    max_new_tokens: int
    #: whether `generate` takes one seed per prompt (the runner's `seeding = "per_problem"` then
    #: batches many problems per call; other methods get one problem per call)
    per_prompt_seeds: ClassVar[bool] = True

    def rows_per_sample(self) -> int:
        """Rows of the batch one sample occupies (its share of a call's row budget)."""
        return 1

    def generate(
        self,
        lm: LanguageModel,
        prompts: Sequence[Sequence[int]],
        samples_per_prompt: int,
        seed: int | Sequence[int],
        *,
        answer_of: AnswerFn | None = None,
    ) -> list[list[MethodSample]]:
        """`samples_per_prompt` samples for every prompt, a deterministic function of `seed`.

        seed: one int >= 0 for the call, or (methods with `per_prompt_seeds`) one per prompt, so
            that a prompt's samples depend on its own seed only, not on the prompts beside it.
        answer_of(tokens) -> str | None: the answer a completion gives (majority vote only); the
        runner builds it from the task's `extract_answer` (else the decoded text).
        """
        _check_request(prompts, samples_per_prompt, seed)
        per_prompt = isinstance(seed, (list, tuple))
        if per_prompt and not self.per_prompt_seeds:
            raise ValueError(f"method kind {self.kind!r} takes one seed per call, not one per prompt")
        before = lm.counter.snapshot()
        seed = list(seed) if per_prompt else seed
        generator = seed if per_prompt else make_generator(seed)
        samples = self._generate(lm, prompts, samples_per_prompt, generator, seed, answer_of)
        compute = _share(spent(before, lm.counter.snapshot()), len(prompts) * samples_per_prompt)
        return [[dataclasses.replace(s, compute=dict(compute)) for s in row] for row in samples]

    @abstractmethod
    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of) -> list[list[MethodSample]]:
        """The samples, without `compute` (filled in by `generate`).  `generator`: the call's
        generator (one seed), or with per-prompt seeds that list itself (`draw` keys rows from it)."""

    @classmethod
    def from_keys(cls, max_new_tokens: int, **keys: Any) -> "Method":
        """The method with `max_new_tokens` and the other config keys of its kind (a `[[methods]]` table)."""
        return cls(max_new_tokens=max_new_tokens, **keys)

    def settings(self) -> dict[str, Any]:
        """The method's settings as a plain dict (for records and fingerprints)."""
        return {"kind": self.kind, **plain(dataclasses.asdict(self))}


def plain(value: Any) -> Any:
    """`value` with non-finite floats as strings (JSON-safe settings)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class ConfiguredMethod(Method):
    """A method that runs one sampler configured by a frozen dataclass, held as `config` (one
    definition of the settings: the sampler's own config class).

    Its config keys are the fields of `config_class` but `max_new_tokens` (a key common to every
    method), renamed by `renamed` (field -> key), so a field added to the config class is a config
    key at once.  `settings()` (records, fingerprints) holds the keys in `recorded` always and any
    other key only when its value is not the field's default: adding a field to the config class
    keeps the fingerprints of results made before it existed, so they still resume.  A setting
    renamed after results were recorded keeps its old name in `settings()` (`recorded_as`: field
    -> recorded key), and configs may still use the old name (`deprecated`: old key -> field), with
    a deprecation message."""

    config_class: ClassVar[type]
    renamed: ClassVar[dict[str, str]] = {}
    recorded_as: ClassVar[dict[str, str]] = {}
    deprecated: ClassVar[dict[str, str]] = {}
    recorded: ClassVar[tuple[str, ...]] = ()
    config: Any

    def __post_init__(self):
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{self.kind}: config must be a {self.config_class.__name__}, got {type(self.config).__name__}")

    @property
    def max_new_tokens(self) -> int:
        return self.config.max_new_tokens

    @classmethod
    def keys(cls) -> dict[str, str]:
        """Config key -> field of `config_class`, for every field but `max_new_tokens`."""
        return {
            cls.renamed.get(field.name, field.name): field.name
            for field in dataclasses.fields(cls.config_class) if field.name != "max_new_tokens"
        }

    @classmethod
    def accepted_keys(cls) -> dict[str, str]:
        """`keys()` and the `deprecated` old names: every key a config may use, -> its field."""
        return {**cls.keys(), **cls.deprecated}

    @classmethod
    def from_keys(cls, max_new_tokens: int, **keys: Any) -> "ConfiguredMethod":
        """The method whose config has `max_new_tokens` and the fields named by the config `keys`."""
        fields = cls.accepted_keys()
        unknown = sorted(set(keys) - set(fields))
        if unknown:
            raise TypeError(f"unknown {cls.kind} keys {', '.join(unknown)}; allowed: {', '.join(cls.keys())}")
        doubled = sorted(key for key in keys if any(other != key and fields[other] == fields[key] for other in keys))
        if doubled:
            raise TypeError(f"{cls.kind}: keys {' and '.join(doubled)} name the same setting; give one")
        for key in sorted(set(keys) & set(cls.deprecated)):
            deprecated_name(f"{cls.kind} key {key!r}", repr(cls.deprecated[key]))
        return cls(cls.config_class(max_new_tokens=max_new_tokens, **{fields[key]: value for key, value in keys.items()}))

    def key_values(self) -> dict[str, Any]:
        """Every setting (`max_new_tokens` included) with its value in `config`, under its recorded
        name (`recorded_as`, else its config key)."""
        fields = {"max_new_tokens": "max_new_tokens", **{name: key for key, name in self.keys().items()}}
        return {self.recorded_as.get(name, key): getattr(self.config, name) for name, key in fields.items()}

    def settings(self) -> dict[str, Any]:
        defaults = {self.recorded_as.get(f.name, self.renamed.get(f.name, f.name)): f.default
                    for f in dataclasses.fields(self.config_class)}
        values = {key: value for key, value in self.key_values().items() if key in self.recorded or value != defaults[key]}
        return {"kind": self.kind, **plain(values)}
