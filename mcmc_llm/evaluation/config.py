"""Experiment configs: a TOML file read into frozen dataclasses, validated key by key.

    [model]     spec, device, dtype, chat_template, eos_token_ids, threads, engine, packed_linear, graphs
    [task]      name, path, subset, seed, options, prompt_format, chat_template, chat_tokenization
    [sampling]  max_new_tokens, samples_per_problem, seed, batch_size, problems_per_call, seeding, max_rows
    [[methods]] name, kind, samples, max_new_tokens, + the keys of the kind (`method_config.METHOD_KEYS`)
    [output]    path
    [scaleout]  workers, gpus_per_worker, address

Every error names its key path (`methods[1].kernel`) and, for choices, the allowed values;
unknown keys are errors (with a "did you mean" hint).  All errors of a file are reported together.
Values are checked by `mcmc_llm.evaluation.checks`; the `[[methods]]` tables are read by
`mcmc_llm.evaluation.method_config`.  See docs/evaluation.md for every key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Mapping

from mcmc_llm.evaluation import checks
from mcmc_llm.evaluation.method_config import MethodConfig, parse_methods

SECTIONS = ("model", "task", "sampling", "methods", "output", "scaleout")
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
ENGINES = ("auto", "static", "dynamic")  # `HFLanguageModel.ENGINES` (not imported: configs load without torch)
PACKED_LINEAR = ("auto", "on", "off")  # `mcmc_llm.lm.hf.packed_linear.MODES` (likewise)
GRAPHS = ("auto", "off", "eager", "compiled")  # `mcmc_llm.lm.hf.decode_step.GRAPH_MODES` (likewise)
CHAT_TOKENIZATIONS = ("ours", "authors")  # `mcmc_llm.lm.chat_encoding.CHAT_TOKENIZATIONS` (likewise)


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
    eos_token_ids: tuple[int, ...] | None = None  # replaces the model's EOS set (generation, MH, decoding)
    threads: int | None = None
    engine: str = "auto"  # decoding engine of a transformers model; changes speed, never results (not fingerprinted)
    packed_linear: str = "auto"  # oneDNN-packed CPU weights; changes speed and float32 rounding only (not fingerprinted, like device)
    graphs: str = "auto"  # static-shape (compiled, CUDA-graph) decoding step; speed and rounding only (not fingerprinted)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    name: str
    path: str | None = None
    subset: int | None = None
    seed: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    prompt_format: str = "default"  # the task's `prompt_format` option (`mcmc_llm.tasks.registry.PROMPT_FORMATS`)
    chat_template: bool | None = None  # this task's prompts in the chat template or not; None: [model] chat_template
    chat_tokenization: str = "ours"  # how a chat-templated prompt becomes ids (`mcmc_llm.lm.chat_encoding`)

    def build_options(self) -> dict[str, Any]:
        """The task's constructor options: `options`, plus `prompt_format` unless it is the default."""
        options = dict(self.options)
        if self.prompt_format != "default":
            options["prompt_format"] = self.prompt_format
        return options


SEEDINGS = ("per_call", "per_problem")


def _problems_per_call_check(value):
    if value == "auto":
        return None
    problem = checks.integer(1)(value)
    return f"{problem} or \"auto\"" if problem else None


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 512
    samples_per_problem: int = 1
    seed: int = 0
    batch_size: int = 1
    problems_per_call: int | str = 1  # or "auto" (seeding = "per_problem"): as many as `max_rows` holds
    seeding: str = "per_call"
    max_rows: int | None = None  # the row budget of "auto" (None: from free memory, `mcmc_llm.lm.memory`)


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

    @property
    def chat_template(self) -> bool | None:
        """Whether prompts go through the chat template: `[task] chat_template` when set, else
        `[model] chat_template` (None: the model's default, on only for the embedded instruct model)."""
        return self.task.chat_template if self.task.chat_template is not None else self.model.chat_template

    def fingerprint(self, method_name: str) -> str:
        """Hash of everything a record of `method_name` depends on besides its key and the problem
        text: model, task name/seed/options, sampling seed, batch size and seeding (and, with per-call
        seeds, the problems per call, which then change the draws), the method's settings
        (and its sample count when batch_size > 1, since groups then depend on it), the prompt
        format, the chat tokenization (when prompts may go through the chat template) and the EOS
        sets.  Device, task path and subset are left out, so a run can move device or grow its
        subset and resume.  Settings added later (EOS sets, prompt format, chat tokenization) enter
        only when they differ from their defaults, so older records keep their fingerprints."""
        entry = self.method(method_name)
        content = {
            "model": [self.model.spec, self.model.dtype, self.chat_template]
            + ([{"eos_token_ids": list(self.model.eos_token_ids)}] if self.model.eos_token_ids is not None else []),
            "task": [self.task.name, self.task.seed, self.task.options]
            + ([{"prompt_format": self.task.prompt_format}] if self.task.prompt_format != "default" else [])
            + ([{"chat_tokenization": self.task.chat_tokenization}]
               if self.task.chat_tokenization != "ours" and self.chat_template is not False else []),
            "sampling": [self.sampling.seed, self.sampling.batch_size]
            + ([self.sampling.problems_per_call]
               if self.sampling.seeding == "per_call" and self.sampling.problems_per_call != 1 else [])
            + ([{"seeding": self.sampling.seeding}] if self.sampling.seeding != "per_call" else []),
            "method": [entry.name, entry.method.settings(), entry.samples if self.sampling.batch_size > 1 else None]
            + ([{"eos_token_ids": list(entry.eos_token_ids)}] if entry.eos_token_ids is not None else []),
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ reading


def _tuple(value):
    return None if value is None else tuple(value)


def _prompt_format_check(task_name: Any) -> checks.Check:
    """`[task] prompt_format`: one of the built-in task's formats (`PROMPT_FORMATS`); for a task
    given by import path, any non-empty string (passed to its factory as `prompt_format`)."""
    from mcmc_llm.tasks.registry import prompt_formats

    allowed = prompt_formats(task_name) if isinstance(task_name, str) and ":" not in task_name else None

    def check(value):
        problem = checks.string(value)
        if problem or allowed is None or value in allowed:
            return problem
        return f"is not a prompt format of task {task_name!r}; allowed: {', '.join(allowed)}"

    return check


def parse_config(data: Mapping[str, Any], source: str | None = None) -> ExperimentConfig:
    """An `ExperimentConfig` from a parsed TOML document; `ConfigError` lists every problem."""
    problems: list[str] = []
    root = checks.Table(data, "", problems)
    root.done(list(SECTIONS))
    sections = {}
    for name in ("model", "task", "sampling", "output", "scaleout"):
        value = data.get(name, {})
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a table ([{name}])")
            value = {}
        sections[name] = checks.Table(value, name, problems)

    t = sections["model"]
    model = ModelConfig(
        spec=t.get("spec", checks.string, "default"), device=t.get("device", checks.string, "auto"),
        dtype=t.get("dtype", checks.choice(DTYPES), "auto"), chat_template=t.get("chat_template", checks.boolean),
        eos_token_ids=_tuple(t.get("eos_token_ids", checks.token_ids)), threads=t.get("threads", checks.integer(1)),
        engine=t.get("engine", checks.choice(ENGINES), "auto"),
        packed_linear=t.get("packed_linear", checks.choice(PACKED_LINEAR), "auto"),
        graphs=t.get("graphs", checks.choice(GRAPHS), "auto"),
    )
    t.done()
    t = sections["task"]
    name = t.get("name", checks.string, required=True)
    task = TaskConfig(
        name=name, path=t.get("path", checks.string),
        subset=t.get("subset", checks.integer(1)), seed=t.get("seed", checks.integer(0), 0),
        options=dict(t.get("options", checks.table, {})),
        prompt_format=t.get("prompt_format", _prompt_format_check(name), "default"),
        chat_template=t.get("chat_template", checks.boolean),
        chat_tokenization=t.get("chat_tokenization", checks.choice(CHAT_TOKENIZATIONS), "ours"),
    )
    if t.has("prompt_format") and "prompt_format" in task.options:
        problems.append("task.prompt_format: also given in task.options; give it once (as task.prompt_format)")
    t.done()
    t = sections["sampling"]
    sampling = SamplingConfig(
        max_new_tokens=t.get("max_new_tokens", checks.integer(1), 512),
        samples_per_problem=t.get("samples_per_problem", checks.integer(1), 1),
        seed=t.get("seed", checks.integer(0), 0), batch_size=t.get("batch_size", checks.integer(1), 1),
        problems_per_call=t.get("problems_per_call", _problems_per_call_check, 1),
        seeding=t.get("seeding", checks.choice(SEEDINGS), "per_call"),
        max_rows=t.get("max_rows", checks.integer(1)),
    )
    if sampling.problems_per_call == "auto" and sampling.seeding != "per_problem":
        problems.append("sampling.problems_per_call = \"auto\" needs sampling.seeding = \"per_problem\" (with "
                        "per-call seeds the grouping of problems changes the draws, so it must be fixed)")
    if sampling.max_rows is not None and sampling.problems_per_call != "auto":
        problems.append("sampling.max_rows is the row budget of problems_per_call = \"auto\"; it has no effect here")
    t.done()
    t = sections["output"]
    output_path = t.get("path", checks.string, required=True)
    t.done()
    t = sections["scaleout"]
    scaleout = ScaleoutConfig(
        workers=t.get("workers", checks.integer(1), 1), gpus_per_worker=t.get("gpus_per_worker", checks.number(0.0)),
        address=t.get("address", checks.string),
    )
    t.done()
    methods = parse_methods(data.get("methods"), sampling.samples_per_problem, sampling.max_new_tokens, problems)
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
    if isinstance(sampling.get("problems_per_call"), int):
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
