"""Traces from the per-step data of `mcmc-llm run` result records (`mcmc_llm.evaluation`).

A results record is one sample of one method on one problem (keys `task_id`, `method`,
`sample_index`).  A `power` record's `diagnostics` lists every MH step of its chain in order:
`step_stage` (block k, 0-based), `step_relative_cut` (cut index / current length) and
`step_accepted` (1 or 0).  The samples of one (method, problem) are independent chains on the same
target, so they form one trace: stats `accepted`, `stage`, `relative_cut` of shape (chain, step),
chains in `sample_index` order, a chain with fewer steps padded with NaN (accepted, relative_cut)
and stage -1.  Records that also list the chain's state after every step (`step_log_p`,
`step_length`) give the samples `log_p` and `length`, for ESS and R-hat; records without them
give acceptance only.  Records without step lists (baseline methods, SMC) have no per-step data.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

STEP_FIELDS = {"accepted": "step_accepted", "stage": "step_stage", "relative_cut": "step_relative_cut"}
STATE_FIELDS = {"log_p": "step_log_p", "length": "step_length"}  # the chain's state after every step, when recorded


def is_results_record(record: Any) -> bool:
    """True for a `mcmc-llm run` results record (it has task_id, method and sample_index)."""
    return isinstance(record, dict) and {"task_id", "method", "sample_index"} <= set(record)


def has_steps(record: dict) -> bool:
    """True when the record lists its chain's MH steps (`diagnostics.step_accepted` and `step_stage`)."""
    diagnostics = record.get("diagnostics") or {}
    return isinstance(diagnostics.get("step_accepted"), list) and isinstance(diagnostics.get("step_stage"), list)


@dataclasses.dataclass(frozen=True)
class MethodTraces:
    """The records of one method: its kind, the trace of every problem (None: no per-step data),
    and how many records it has."""

    method: str
    kind: str
    records: int
    traces: dict[str, Any]  # task_id -> Trace or None

    @property
    def has_steps(self) -> bool:
        return any(trace is not None for trace in self.traces.values())


def _stacked(name: str, rows: Sequence[np.ndarray]) -> np.ndarray:
    """(chain, step) rows of stat `name` stacked, the shorter ones padded (NaN, or -1 for `stage`)."""
    steps = max(row.shape[-1] for row in rows)
    fill, dtype = (-1, np.int64) if name == "stage" else (np.nan, np.float64)
    return np.concatenate([
        np.pad(np.atleast_2d(row).astype(dtype), ((0, 0), (0, steps - row.shape[-1])), constant_values=fill)
        for row in rows])


def chain_trace(records: Sequence[dict]):
    """The `core.trace.Trace` of the records of one (method, problem), one chain per record, or None
    when a record has no per-step data."""
    from mcmc_llm.core.trace import Trace

    if not records or not all(has_steps(r) for r in records):
        return None
    records = sorted(records, key=lambda r: int(r["sample_index"]))
    def stacked(name: str, field: str) -> np.ndarray:
        return _stacked(name, [np.asarray(r["diagnostics"].get(field) or [], dtype=np.float64) for r in records])

    stats = {name: stacked(name, field) for name, field in STEP_FIELDS.items()}
    samples = {name: stacked(name, field) for name, field in STATE_FIELDS.items()
               if all(isinstance(r["diagnostics"].get(field), list) for r in records)}
    return Trace(samples=samples, stats=stats)


def method_traces(records: Sequence[dict]) -> list[MethodTraces]:
    """One `MethodTraces` per method, in order of first appearance; problems in order of first appearance."""
    grouped: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    kinds: dict[str, str] = {}
    for record in records:
        grouped[str(record["method"])][str(record["task_id"])].append(record)
        kinds.setdefault(str(record["method"]), str(record.get("kind", "")))
    return [
        MethodTraces(method, kinds[method], sum(len(rows) for rows in problems.values()),
                     {task_id: chain_trace(rows) for task_id, rows in problems.items()})
        for method, problems in grouped.items()
    ]


def pooled_trace(traces: Sequence[Any]):
    """Every chain of `traces` in one trace (steps padded as in `chain_trace`), e.g. for one heatmap per method."""
    from mcmc_llm.core.trace import Trace

    traces = [trace for trace in traces if trace is not None]
    return Trace(samples={}, stats={name: _stacked(name, [trace.stats[name] for trace in traces]) for name in STEP_FIELDS})
