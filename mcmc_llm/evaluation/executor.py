"""Work units and the executor that turns them into graded records.

A `WorkUnit` is one `method.generate` call: a group of sample indices of one method on one or
more consecutive problems, with the seed derived from its key (`mcmc_llm.evaluation.runner`
plans the units and explains the seeds).  A `UnitExecutor` holds the model, the task and the
methods, and runs units: it encodes each problem's prompt with the model (`lm.encode_prompt`, or
the reference code's chat tokenization with `[task] chat_tokenization = "authors"`),
clears the model's prefix cache, generates, decodes (`lm.decode`, EOS stripped), grades and
returns one record per missing key.  EOS sets: `[model] eos_token_ids` replaces the model's own
(for a pre-built `lm` too), and a method's `eos_token_ids` replaces that for the method alone
(its generation, MH and decoding run on a view of the model with that set,
`mcmc_llm.lm.registry.with_eos_token_ids`).  `run_experiment` uses one in-process; with `[scaleout]`,
every Ray worker holds its own (`mcmc_llm.evaluation.scaleout`).
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from typing import Any, Callable, Iterable, Sequence

from mcmc_llm.evaluation.config import ConfigError, ExperimentConfig
from mcmc_llm.evaluation.results import RecordKey


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """One generate call: `sample_indices` of `method` on each of `problems` (consecutive problems
    of the task, `problems_per_call` of them), of which the record keys in `missing` are to be
    recorded.  Its seed is `seed` for the whole call, or with per-problem seeding `seeds`, one per
    problem, so that a problem's records do not depend on the problems that share its call."""

    problems: tuple[Any, ...]
    method: str
    sample_indices: tuple[int, ...]
    missing: frozenset[RecordKey]
    seed: int
    seeds: tuple[int, ...] | None = None  # `seeding = "per_problem"`: one seed per problem (then `seed` is the first's)


def build_task(name: str, options: dict[str, Any]):
    """A task by registry name (`mcmc_llm.tasks.get_task`) or by import path `package.module:factory`."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ConfigError([f"task.name: cannot import {name!r}: {error}"]) from None
        return factory(**options)
    from mcmc_llm.tasks import get_task

    try:
        return get_task(name, **options)
    except (KeyError, ValueError, TypeError) as error:
        raise ConfigError([f"task.name / task.options: {error}"]) from None


def answer_extractor(task) -> Callable[[str], str | None] | None:
    """The grade-free answer extraction majority vote uses: the task's `extract_answer(completion)`
    if it has one; else, for the built-in tasks, their own extraction helpers (arithmetic: the
    graded integer; math500: the last \\boxed{} content; gpqa: the choice letter); else None
    (the decoded text is the answer)."""
    extract = getattr(task, "extract_answer", None)
    if callable(extract):
        return extract
    name = getattr(task, "name", None)
    if name == "arithmetic":
        from mcmc_llm.tasks.arithmetic import extract_integer

        fallback = getattr(task, "fallback_last_number", True)
        return lambda text: (lambda value: None if value is None else str(value))(extract_integer(text, fallback)[0])
    if name == "math500":
        from mcmc_llm.tasks.math500 import last_boxed

        return lambda text: (lambda boxed: None if boxed is None else " ".join(boxed.split()))(last_boxed(text))
    if name == "gpqa":
        from mcmc_llm.tasks.gpqa import extract_choice

        return extract_choice
    return None


def task_of(config: ExperimentConfig):
    """The config's task, with its prompt format (`[task] prompt_format`) among its options."""
    return build_task(config.task.name, config.task.build_options())


def _max_new_tokens(method, default: int) -> int:
    """The generation cap of a method object: its own `max_new_tokens`, or its sampler config's."""
    for owner in (method, getattr(method, "config", None)):
        value = getattr(owner, "max_new_tokens", None)
        if isinstance(value, int):
            return value
    return default


def _strip_eos(tokens: Sequence[int], eos: Iterable[int]) -> list[int]:
    tokens = list(tokens)
    return tokens[:-1] if tokens and tokens[-1] in set(eos) else tokens


class UnitExecutor:
    """Holds a model, a task and the methods, and turns work units into graded records.  Used
    in-process by `run_experiment` and inside every Ray worker by `scaleout`."""

    def __init__(self, config: ExperimentConfig, task=None, lm=None):
        from mcmc_llm.lm.registry import load_model

        self.config = config
        from mcmc_llm.lm.threads import configure_threads

        configure_threads(config.model.threads, config.model.device)  # [model] threads, else the CPU default
        self.task = task if task is not None else task_of(config)
        self._extract = answer_extractor(self.task)
        self.lm = self._with_eos(
            lm if lm is not None else load_model(
                config.model.spec, device=config.model.device, dtype=config.model.dtype, chat_template=config.chat_template,
                engine=None if config.model.engine == "auto" else config.model.engine,
                packed_linear=None if config.model.packed_linear == "auto" else config.model.packed_linear,
                graphs=None if config.model.graphs == "auto" else config.model.graphs,
                threads=config.model.threads,
            ),
            config.model.eos_token_ids, "model.eos_token_ids",
        )
        self._method_lms = {
            m.name: self._with_eos(self.lm, m.eos_token_ids, f"methods[{i}].eos_token_ids")
            for i, m in enumerate(config.methods)
        }
        self._prompts: dict[str, list[int]] = {}
        self._fingerprints = {m.name: config.fingerprint(m.name) for m in config.methods}

    @staticmethod
    def _with_eos(lm, eos_token_ids, key: str):
        """`lm` with the EOS set `eos_token_ids` (None: unchanged); a bad id is a ConfigError at `key`."""
        if eos_token_ids is None:
            return lm
        from mcmc_llm.lm.registry import with_eos_token_ids

        try:
            return with_eos_token_ids(lm, eos_token_ids)
        except ValueError as error:
            raise ConfigError([f"{key}: {error}"]) from None

    def lm_for(self, method: str):
        """The model `method` runs on: the shared one, or a view with the method's EOS set."""
        return self._method_lms.get(method, self.lm)

    def prompt_ids(self, problem) -> list[int]:
        """The problem's prompt ids (`[task] chat_tokenization`: `mcmc_llm.lm.chat_encoding`)."""
        if problem.task_id not in self._prompts:
            from mcmc_llm.lm.chat_encoding import encode_task_prompt

            self._prompts[problem.task_id] = encode_task_prompt(self.lm, problem.prompt, self.config.task.chat_tokenization)
        return self._prompts[problem.task_id]

    def check_prompts_fit(self, problems: Iterable) -> None:
        """ConfigError naming every problem whose prompt leaves less than the longest method's
        `max_new_tokens` in the model's context (`lm.max_context`, prompt + generated tokens);
        nothing to check when the model states no limit (toy and callable models)."""
        limit = getattr(self.lm, "max_context", None)
        if limit is None:
            return
        need = max(_max_new_tokens(entry.method, self.config.sampling.max_new_tokens) for entry in self.config.methods)
        over = {p.task_id: n for p in problems if (n := len(self.prompt_ids(p))) + need > limit}
        if over:
            shown = ", ".join(f"{task} ({n} tokens)" for task, n in list(over.items())[:5])
            more = f" and {len(over) - 5} more" if len(over) > 5 else ""
            raise ConfigError([f"{len(over)} prompt(s) leave less than max_new_tokens = {need} of the model's context "
                               f"({limit} tokens): {shown}{more}; lower max_new_tokens or use a longer-context model"])

    def completion_text(self, tokens: Sequence[int], method: str | None = None) -> str:
        """The decoded completion, a final EOS (of `method`'s EOS set) removed."""
        lm = self.lm_for(method) if method is not None else self.lm
        return lm.decode(_strip_eos(tokens, lm.eos_token_ids))

    def answer_of(self, tokens: Sequence[int], method: str | None = None) -> str | None:
        text = self.completion_text(tokens, method)
        return self._extract(text) if self._extract is not None else text

    def _grade(self, problem, completion: str):
        from mcmc_llm.tasks import GradeResult

        try:
            return self.task.grade(problem, completion)
        except Exception as error:  # a grader bug must not lose the sample
            return GradeResult(False, "error", f"grader raised {type(error).__name__}: {error}")

    def run(self, unit: WorkUnit) -> list[dict[str, Any]]:
        """Generate the unit's group for each of its problems and return the missing records."""
        entry = self.config.method(unit.method)
        lm = self.lm_for(entry.name)
        clear = getattr(lm, "clear_prefixes", None)
        if callable(clear):
            clear()  # a unit's numerics must not depend on prompts cached by earlier units
        prompts = [self.prompt_ids(problem) for problem in unit.problems]
        started = time.perf_counter()
        seed = list(unit.seeds) if unit.seeds is not None and entry.method.per_prompt_seeds else unit.seed
        per_problem = entry.method.generate(lm, prompts, len(unit.sample_indices), seed,
                                            answer_of=lambda tokens: self.answer_of(tokens, entry.name))
        wall = (time.perf_counter() - started) / (len(unit.sample_indices) * len(prompts))
        records = []
        seeds = unit.seeds if unit.seeds is not None else (unit.seed,) * len(unit.problems)
        for problem, prompt, samples, problem_seed in zip(unit.problems, prompts, per_problem, seeds):
            for index, sample in zip(unit.sample_indices, samples):
                if (problem.task_id, entry.name, index) not in unit.missing:
                    continue
                completion = self.completion_text(sample.tokens, entry.name)
                graded_at = time.perf_counter()
                grade = self._grade(problem, completion)
                records.append({
                    "task": self.config.task.name, "task_id": problem.task_id, "method": entry.name,
                    "kind": entry.kind, "sample_index": index, "seed": problem_seed, "group": list(unit.sample_indices),
                    "fingerprint": self._fingerprints[entry.name], "model": self.config.model.spec,
                    "prompt_tokens": len(prompt), "completion": completion, "tokens": list(sample.tokens),
                    "length": sample.length, "ended": sample.ended, "log_p": sample.log_p, "entropy": sample.entropy,
                    "passed": bool(grade.passed), "status": grade.status, "detail": grade.detail, "extracted": grade.extracted,
                    "diagnostics": sample.diagnostics, "compute": sample.compute,
                    "wall_time_s": wall, "grade_time_s": time.perf_counter() - graded_at,
                })
        return records
