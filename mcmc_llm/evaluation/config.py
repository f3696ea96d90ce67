"""Experiment configs: a TOML file read into frozen dataclasses, validated key by key.

    [model]     spec, device, dtype, chat_template, threads
    [task]      name, path, subset, seed, options
    [sampling]  max_new_tokens, samples_per_problem, seed, batch_size, problems_per_call
    [[methods]] name, kind, samples, max_new_tokens, + the keys of the kind (see METHOD_KEYS)
    [output]    path
    [scaleout]  workers, gpus_per_worker, address

Every error names its key path (`methods[1].kernel`) and, for choices, the allowed values;
unknown keys are errors (with a "did you mean" hint).  All errors of a file are reported together.
See docs/evaluation.md for every key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

from mcmc_llm.evaluation.methods import (
    METHOD_KINDS, SAMPLERS, SELECTIONS, Method, PowerSampling, matched_n, power_token_budget,
)
from mcmc_llm.proposals.cut_rules import CUT_RULES
from mcmc_llm.smc.resampling import RESAMPLING_SCHEMES
from mcmc_llm.drivers.power import BATCHING, PowerSamplerConfig

SECTIONS = ("model", "task", "sampling", "methods", "output", "scaleout")
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


class ConfigError(ValueError):
    """A config with one or more problems, each `key.path: message`."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        head = f"invalid config {source}" if source else "invalid config"
        super().__init__(head + ":\n  " + "\n  ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    spec: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    chat_template: bool | None = None
    threads: int | None = None


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    name: str
    path: str | None = None
    subset: int | None = None
    seed: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 512
    samples_per_problem: int = 1
    seed: int = 0
    batch_size: int = 1
    problems_per_call: int = 1


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """A named method; `samples` is its number of samples per problem."""

    name: str
    method: Method
    samples: int

    @property
    def kind(self) -> str:
        return self.method.kind


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    path: Path


@dataclasses.dataclass(frozen=True)
class ScaleoutConfig:
    workers: int = 1
    gpus_per_worker: float | None = None
    address: str | None = None


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig
    task: TaskConfig
    sampling: SamplingConfig
    methods: tuple[MethodConfig, ...]
    output: OutputConfig
    scaleout: ScaleoutConfig = ScaleoutConfig()

    def method(self, name: str) -> MethodConfig:
        return next(m for m in self.methods if m.name == name)

    def fingerprint(self, method_name: str) -> str:
        """Hash of everything a record of `method_name` depends on besides its key and the problem
        text: model, task name/seed/options, sampling seed and batch size, the method's settings
        (and its sample count when batch_size > 1, since groups then depend on it).  Device, task
        path and subset are left out, so a run can move device or grow its subset and resume."""
        entry = self.method(method_name)
        content = {
            "model": [self.model.spec, self.model.dtype, self.model.chat_template],
            "task": [self.task.name, self.task.seed, self.task.options],
            "sampling": [self.sampling.seed, self.sampling.batch_size]
            + ([self.sampling.problems_per_call] if self.sampling.problems_per_call != 1 else []),
            "method": [entry.name, entry.method.settings(), entry.samples if self.sampling.batch_size > 1 else None],
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ reading

Check = Callable[[Any], str | None]  # returns a problem description, or None if the value is fine


def _int(minimum: int) -> Check:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"must be an integer >= {minimum}"
    return check


def _number(minimum: float | None = None, *, strict: bool = False, allow_inf: bool = False) -> Check:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return "must be a number"
        if math.isinf(value) and not allow_inf:
            return "must be finite"
        if minimum is not None and (value <= minimum if strict else value < minimum):
            return f"must be {'>' if strict else '>='} {minimum}"
    return check


def _string(value):
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"


def _bool(value):
    if not isinstance(value, bool):
        return "must be true or false"


def _choice(allowed) -> Check:
    def check(value):
        if value not in allowed:
            return f"must be one of {', '.join(map(str, allowed))}"
    return check


def _table(value):
    if not isinstance(value, dict):
        return "must be a table"


def _alpha(value):
    if value in ("inf", "infinity"):
        return None
    return _number(0.0, strict=True, allow_inf=True)(value)


def _finite_alpha(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        return "must be a finite number > 0 (smc and rollout need a finite alpha)"


def _fraction(value):
    return _number(0.0)(value) or (None if value <= 1 else "must be in [0, 1]")


def _top_p(value):
    return _number(0.0, strict=True)(value) or (None if value <= 1 else "must be in (0, 1]")


class _Table:
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
        if check is _alpha and isinstance(value, str):
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


_RULE_KEYS = {"top_k": _int(1), "top_p": _top_p}
_CANDIDATE_KEYS = {
    "n": _int(1), "budget_tokens": _number(0.0, strict=True), "match": _string,
    "expected_length": _number(0.0, strict=True), "sampler": _choice(SAMPLERS), "alpha": _alpha,
    "temperature": _number(0.0, strict=True), **_RULE_KEYS,
}
_POWER_CHECKS = {
    "alpha": _alpha, "block_size": _int(1), "mcmc_steps": _int(0), "kernel": _choice(CUT_RULES),
    "proposal_temperature": _number(0.0, strict=True), "cut_sharpness": _number(0.0), "ratio": _choice(("exact", "published")),
    "batching": _choice(BATCHING), "prefetch": _bool, **_RULE_KEYS,
}
#: Keys each method kind accepts besides the common ones (name, kind, samples, max_new_tokens).
METHOD_KEYS: dict[str, dict[str, Check]] = {
    "base": dict(_RULE_KEYS),
    "low_temperature": {"alpha": _alpha, "temperature": _number(0.0, strict=True), **_RULE_KEYS},
    "greedy": {},
    "power": {
        field.name: _POWER_CHECKS.get(field.name, lambda value: None)
        for field in dataclasses.fields(PowerSamplerConfig) if field.name != "max_new_tokens"
    },
    "best_of_n": {**_CANDIDATE_KEYS, "select": _choice(SELECTIONS)},
    "majority_vote": dict(_CANDIDATE_KEYS),
    "smc": {
        "alpha": _finite_alpha, "particles": _int(1), "resampling": _choice(tuple(RESAMPLING_SCHEMES)),
        "ess_threshold": _fraction, "proposal_temperature": _number(0.0, strict=True), "ramp_tokens": _int(0),
        "rejuvenation_steps": _int(0), "rejuvenation_kernel": _choice(CUT_RULES),
    },
    "rollout": {
        "alpha": _finite_alpha, "top_candidates": _int(1), "rollouts": _int(1), "jackknife": _bool,
        "proposal_temperature": _number(0.0, strict=True), "horizon": _int(1),
    },
}
COMMON_METHOD_KEYS = ("name", "kind", "samples", "max_new_tokens")


def _method_settings(table: _Table, kind: str) -> dict[str, Any]:
    return {key: table.get(key, check) for key, check in METHOD_KEYS[kind].items() if table.has(key)}


def _build_method(kind: str, settings: dict[str, Any], max_new_tokens: int) -> Method:
    if kind == "power":
        return PowerSampling(PowerSamplerConfig(max_new_tokens=max_new_tokens, **settings))
    return METHOD_KINDS[kind](max_new_tokens=max_new_tokens, **settings)


def _resolve_budget(
    settings: dict[str, Any], path: str, cap: int, power: dict[str, PowerSampling], problems: list[str]
) -> dict[str, Any] | None:
    """Settings with `n` resolved from `match` / `budget_tokens` (see `matched_n`), or None."""
    settings = dict(settings)
    given = [key for key in ("n", "budget_tokens", "match") if key in settings]
    if not given and len(power) == 1:
        settings["match"], given = next(iter(power)), ["match"]
    if len(given) != 1:
        problems.append(
            f"{path}: give exactly one of n, budget_tokens, match (the name of a power method)"
            + (f"; got {', '.join(given)}" if given else f"; there are {len(power)} power methods to match")
        )
        return None
    match = settings.pop("match", None)
    if match is not None:
        if match not in power:
            problems.append(f"{path}.match: must name a power method, one of {', '.join(power) or '(none)'}; got {match!r}")
            return None
        length = settings.get("expected_length", power[match].max_new_tokens)
        settings.update(
            budget_tokens=round(power_token_budget(power[match].config, length), 3), expected_length=length, matched_to=match
        )
    elif "budget_tokens" in settings:
        settings.setdefault("expected_length", cap)
    if "n" not in settings:
        settings["n"] = matched_n(settings["budget_tokens"], settings["expected_length"])
    return settings


def _methods(raw: Any, sampling: SamplingConfig, problems: list[str]) -> tuple[MethodConfig, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(item, dict) for item in raw):
        problems.append("methods: must be a non-empty array of tables ([[methods]] ...)")
        return ()
    parsed = []
    for index, item in enumerate(raw):
        path = f"methods[{index}]"
        table = _Table(item, path, problems)
        before = len(problems)
        name = table.get("name", _string, required=True)
        if name is not None and not _NAME.fullmatch(name):
            problems.append(f"{path}.name: may only hold letters, digits and _.+-, got {name!r}")
        kind = table.get("kind", _choice(tuple(METHOD_KINDS)), required=True)
        samples = table.get("samples", _int(1), sampling.samples_per_problem)
        cap = table.get("max_new_tokens", _int(1), sampling.max_new_tokens)
        settings = _method_settings(table, kind) if kind else {}
        if kind:
            table.done(list(COMMON_METHOD_KEYS) + list(METHOD_KEYS[kind]))
        parsed.append((path, name, kind, samples, cap, settings, len(problems) == before))
    names = [p[1] for p in parsed if p[1]]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"methods: the name {name!r} is used more than once; names must be unique")
    built: dict[str, Method] = {}
    broken = {p[1] for p in parsed if p[1] and not p[6]}  # already reported: do not cascade
    for path, name, kind, samples, cap, settings, valid in sorted(parsed, key=lambda p: p[2] in ("best_of_n", "majority_vote")):
        if not valid:
            continue
        if kind in ("best_of_n", "majority_vote"):
            implicit = not any(key in settings for key in ("n", "budget_tokens", "match"))
            if settings.get("match") in broken or (implicit and any(p[2] == "power" and p[1] in broken for p in parsed)):
                continue
            power = {n: m for n, m in built.items() if isinstance(m, PowerSampling)}
            settings = _resolve_budget(settings, path, cap, power, problems)
            if settings is None:
                continue
        try:
            built[name] = _build_method(kind, settings, cap)
        except (TypeError, ValueError) as error:
            broken.add(name)
            problems.append(f"{path}: {error}")
    return tuple(MethodConfig(p[1], built[p[1]], p[3]) for p in parsed if p[1] in built)


def parse_config(data: Mapping[str, Any], source: str | None = None) -> ExperimentConfig:
    """An `ExperimentConfig` from a parsed TOML document; `ConfigError` lists every problem."""
    problems: list[str] = []
    root = _Table(data, "", problems)
    root.done(list(SECTIONS))
    sections = {}
    for name in ("model", "task", "sampling", "output", "scaleout"):
        value = data.get(name, {})
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a table ([{name}])")
            value = {}
        sections[name] = _Table(value, name, problems)

    t = sections["model"]
    model = ModelConfig(
        spec=t.get("spec", _string, "default"), device=t.get("device", _string, "auto"),
        dtype=t.get("dtype", _choice(DTYPES), "auto"), chat_template=t.get("chat_template", _bool),
        threads=t.get("threads", _int(1)),
    )
    t.done()
    t = sections["task"]
    task = TaskConfig(
        name=t.get("name", _string, required=True), path=t.get("path", _string), subset=t.get("subset", _int(1)),
        seed=t.get("seed", _int(0), 0), options=dict(t.get("options", _table, {})),
    )
    t.done()
    t = sections["sampling"]
    sampling = SamplingConfig(
        max_new_tokens=t.get("max_new_tokens", _int(1), 512), samples_per_problem=t.get("samples_per_problem", _int(1), 1),
        seed=t.get("seed", _int(0), 0), batch_size=t.get("batch_size", _int(1), 1),
        problems_per_call=t.get("problems_per_call", _int(1), 1),
    )
    t.done()
    t = sections["output"]
    output_path = t.get("path", _string, required=True)
    t.done()
    t = sections["scaleout"]
    scaleout = ScaleoutConfig(
        workers=t.get("workers", _int(1), 1), gpus_per_worker=t.get("gpus_per_worker", _number(0.0)),
        address=t.get("address", _string),
    )
    t.done()
    methods = _methods(data.get("methods"), sampling, problems)
    if problems:
        raise ConfigError(problems, source)
    return ExperimentConfig(model, task, sampling, methods, OutputConfig(Path(output_path)), scaleout)


def read_document(path: str | Path) -> dict[str, Any]:
    """The TOML document of a config file (not yet validated: see `parse_config`)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError([f"cannot read the config file: {error.strerror or error}"], str(path)) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"not valid TOML: {error}"], str(path)) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML experiment config."""
    return parse_config(read_document(path), str(path))


def smoke_document(document: Mapping[str, Any], *, problems: int = 2, max_new_tokens: int = 24, samples: int = 2,
                   block_size: int = 8, mcmc_steps: int = 2) -> dict[str, Any]:
    """A copy of a config document shrunk to smoke-test sizes, with the same methods and keys: the
    first `problems` problems, `max_new_tokens` tokens, at most `samples` samples per method, power
    blocks of `block_size` tokens and at most `mcmc_steps` MH steps, SMC/rollout at most 2
    particles/candidates.  Used by `mcmc-llm run --smoke` and the reproduction's `--quick`."""
    document = copy.deepcopy(dict(document))
    document.setdefault("task", {})["subset"] = problems
    sampling = document.setdefault("sampling", {})
    sampling["max_new_tokens"] = max_new_tokens
    sampling["samples_per_problem"] = min(samples, sampling.get("samples_per_problem", 1))
    sampling["batch_size"] = min(samples, sampling.get("batch_size", 1))
    if "problems_per_call" in sampling:
        sampling["problems_per_call"] = min(problems, sampling["problems_per_call"])
    for method in document.get("methods", []):
        method.pop("max_new_tokens", None)
        if "samples" in method:
            method["samples"] = min(method["samples"], samples)
        if method.get("kind") == "power":
            method["block_size"] = block_size
            method["mcmc_steps"] = min(method.get("mcmc_steps", 10), mcmc_steps)
        for key in ("particles", "top_candidates", "rollouts"):
            if key in method:
                method[key] = min(method[key], 2)
        if "ramp_tokens" in method:
            method["ramp_tokens"] = min(method["ramp_tokens"], max_new_tokens)
    return document
