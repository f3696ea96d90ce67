"""The experiment runner: generate, grade and record every (problem, method, sample_index).

Work is split into units.  A unit is one `method.generate` call for one problem: the sample
indices of one group `[g*b, (g+1)*b)` (b = `sampling.batch_size`, default 1), generated together
(batched: several chains in one `power_sample` call, several rows in one `sample_continuations`).
Its seed is derived from the key alone,

    seed(unit) = sha256(config seed, task_id, method name, first sample index)[:63 bits],

(task_id: the unit's first problem; with `[sampling] seeding = "per_problem"` every problem of
the unit has its own seed, from its own task_id, so the problems per call, fixed or "auto" from
the row budget, change no record: `problems_per_call`),

and the LM's prompt-prefix cache is cleared before every unit, so a record's content is a function
of its key and the config only: it does not depend on ordering, on where a run was interrupted
and resumed, or on which Ray worker produced it.  Cost of the choice: with batch_size = 1 (the
default) samples of a problem are not batched with each other; with batch_size = b, an
interrupted group is regenerated whole (its already written records are not written again), and
changing b changes the samples.

Resume: existing records are read (an incomplete last line from a `kill -9` is cut off), units
whose records all exist are skipped, and only missing records are appended.  Records carry a
fingerprint of the settings they depend on; resuming with different settings is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from mcmc_llm.evaluation.config import ConfigError, ExperimentConfig
from mcmc_llm.evaluation.executor import UnitExecutor, WorkUnit, task_of
from mcmc_llm.evaluation.results import (
    MethodSummary, RecordKey, ResultsWriter, format_summary, read_records, record_key, summarize, summary_path,
    write_summary,
)
from mcmc_llm.evaluation.scaleout import run_units

#: Record fields that measure time; everything else in a record is deterministic given the config.
VOLATILE_FIELDS = ("wall_time_s", "grade_time_s")


def record_content(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its timing fields (what must be identical across reruns and workers)."""
    return {key: value for key, value in record.items() if key not in VOLATILE_FIELDS}


def unit_seed(config_seed: int, task_id: str, method: str, first_index: int) -> int:
    """A seed in [0, 2^63) derived from the key of a unit's first record (stable across Python runs)."""
    text = "\x1f".join([str(config_seed), task_id, method, str(first_index)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def load_problems(task, config: ExperimentConfig) -> list:
    problems = task.load(path=config.task.path, subset=config.task.subset, seed=config.task.seed)
    ids = [p.task_id for p in problems]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"task {config.task.name!r} returned duplicate task_ids {duplicates[:5]}; records are keyed by them")
    return list(problems)


def problems_per_call(config: ExperimentConfig, method_name: str, max_rows: int | None = None) -> int:
    """The problems of one call of `method_name`: `[sampling] problems_per_call`; with per-problem
    seeding, "auto" is as many as `max_rows` rows hold (each problem takes batch_size x the method's
    `rows_per_sample()` rows), and a method that takes one seed per call gets one problem per call."""
    sampling = config.sampling
    if sampling.seeding == "per_call":
        return int(sampling.problems_per_call)
    method = config.method(method_name).method
    if not method.per_prompt_seeds:
        return 1
    if sampling.problems_per_call != "auto":
        return int(sampling.problems_per_call)
    if max_rows is None:
        raise ValueError("problems_per_call = 'auto' needs the row budget (max_rows)")
    return max(1, int(max_rows) // (sampling.batch_size * method.rows_per_sample()))


def plan_units(config: ExperimentConfig, problems: Sequence, done: set[RecordKey], max_rows: int | None = None) -> list[WorkUnit]:
    """The units with at least one missing record.  Problems are chunked by position (chunk c holds
    problems `[c k, (c+1) k)`, k = `problems_per_call(...)`) whatever is already done, so a unit and
    its seeds never depend on what an interrupted run had finished.  With per-call seeding the seed
    keys the chunk's first problem; with per-problem seeding every problem has its own
    (`unit_seed` of its own task id), so k changes nothing but speed."""
    units = []
    size, per_problem = config.sampling.batch_size, config.sampling.seeding == "per_problem"
    chunk_sizes = {entry.name: problems_per_call(config, entry.name, max_rows) for entry in config.methods}
    starts = sorted({(start, order) for order, entry in enumerate(config.methods)
                     for start in range(0, len(problems), chunk_sizes[entry.name])})
    for start, order in starts:
        entry = config.methods[order]
        chunk = tuple(problems[start : start + chunk_sizes[entry.name]])
        for first in range(0, entry.samples, size):
            group = tuple(range(first, min(first + size, entry.samples)))
            keys = {(p.task_id, entry.name, i) for p in chunk for i in group}
            if keys - done:
                seeds = tuple(unit_seed(config.sampling.seed, p.task_id, entry.name, first) for p in chunk)
                units.append(WorkUnit(chunk, entry.name, group, frozenset(keys - done), seeds[0],
                                      seeds if per_problem else None))
    return units


def _row_budget(config: ExperimentConfig, problems: Sequence, local: UnitExecutor | None) -> int | None:
    """`[sampling] max_rows`, else for problems_per_call = "auto" the rows that free memory holds at
    the longest prompt plus `max_new_tokens` (`mcmc_llm.lm.memory.row_budget`; Ray workers, whose
    models the driver does not hold, get `FALLBACK_ROWS`)."""
    if config.sampling.problems_per_call != "auto":
        return None
    if config.sampling.max_rows is not None:
        return config.sampling.max_rows
    from mcmc_llm.lm.memory import FALLBACK_ROWS, row_budget

    if local is None:
        return FALLBACK_ROWS
    longest = max((len(local.prompt_ids(p)) for p in problems), default=0)
    rows = row_budget(local.lm, longest + config.sampling.max_new_tokens)
    print(f"problems_per_call = auto: a row budget of {rows} rows ({longest} + {config.sampling.max_new_tokens} "
          f"tokens per row, from free memory)", file=sys.stderr)
    return rows


@dataclasses.dataclass
class RunReport:
    path: Path
    records: list[dict[str, Any]]
    summaries: list[MethodSummary]
    generated: int
    skipped: int
    wall_time_s: float

    def table(self) -> str:
        return format_summary(self.summaries)


def _check_fingerprints(config: ExperimentConfig, records: list[dict[str, Any]], path: Path) -> None:
    foreign = next((r for r in records if "fingerprint" not in r or "method" not in r), None)
    if foreign is not None:
        raise ConfigError([f"{path} holds records this runner did not write (no settings fingerprint, e.g. "
                           f"{record_key(foreign)}); refusing to add to it: choose another [output] path"])
    expected = {m.name: config.fingerprint(m.name) for m in config.methods}
    stale = sorted({r["method"] for r in records if r["method"] in expected and r.get("fingerprint") != expected[r["method"]]})
    if stale:
        raise ConfigError(
            [f"methods {', '.join(stale)}: {path} holds records made with different settings "
             "(model, task seed/options, sampling seed/batch_size or the method's keys); "
             "write to a new [output] path or remove the file"]
        )


def run_experiment(
    config: ExperimentConfig,
    *,
    task=None,
    lm=None,
    progress: bool | None = None,
) -> RunReport:
    """Run (or resume) `config`; returns the records of its problems and methods and their summary.

    task / lm: pre-built objects (otherwise built from the config; Ray workers always build their
    own).  Units run on a `UnitExecutor` (`mcmc_llm.evaluation.executor`); with `[scaleout]
    workers > 1`, they are spread over Ray actors (`scaleout.run_units`).  progress: show the
    progress bar (None: when stderr is a terminal).
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    path = config.output.path
    task = task if task is not None else task_of(config)
    problems = load_problems(task, config)
    existing = read_records(path, repair=True)
    _check_fingerprints(config, existing, path)
    done = {record_key(r) for r in existing}
    wanted = {(p.task_id, m.name, i) for p in problems for m in config.methods for i in range(m.samples)}
    local = None
    if wanted - done and config.scaleout.workers <= 1:  # load the model before the progress bar starts
        local = UnitExecutor(config, task=task, lm=lm)
    units = plan_units(config, problems, done, max_rows=_row_budget(config, problems, local))
    generated = 0
    if units:
        if local is not None:
            local.check_prompts_fit({p.task_id: p for unit in units for p in unit.problems}.values())  # before any work
        bar = tqdm(total=len(wanted), initial=len(wanted & done), unit="sample", desc="evaluating",
                   disable=not (sys.stderr.isatty() if progress is None else progress), file=sys.stderr, dynamic_ncols=True)
        with ResultsWriter(path) as writer, bar:
            tally = {"passed": 0, "accepted": 0.0, "chains": 0}

            def write(records: list[dict[str, Any]]) -> None:
                nonlocal generated
                for record in records:
                    writer.append(record)
                    generated += 1
                    bar.update(1)
                    tally["passed"] += bool(record.get("passed"))
                    rate = (record.get("diagnostics") or {}).get("acceptance_rate")
                    if isinstance(rate, (int, float)):
                        tally["accepted"], tally["chains"] = tally["accepted"] + rate, tally["chains"] + 1
                if records:
                    acceptance = f", acceptance {tally['accepted'] / tally['chains']:.2f}" if tally["chains"] else ""
                    bar.set_postfix_str(f"{records[-1]['method']} {records[-1]['task_id']}: passed "
                                        f"{tally['passed']}/{generated}{acceptance}", refresh=False)

            if config.scaleout.workers > 1:
                run_units(config, units, write)
            else:
                for unit in units:
                    write(local.run(unit))
    records = [r for r in read_records(path) if record_key(r) in wanted]
    summaries = summarize(records, [m.name for m in config.methods])
    write_summary(summaries, summary_path(path))
    return RunReport(path, records, summaries, generated, len(wanted & done), time.perf_counter() - started)
