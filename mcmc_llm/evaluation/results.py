"""Results files (JSONL, one record per (task_id, method, sample_index)) and their summary.

Writing: `ResultsWriter.append` writes one line, flushes and fsyncs it, so a record on disk is
complete.  Reading after a crash: `read_records(path, repair=True)` drops an incomplete last
line (a `kill -9` in the middle of a write) by truncating the file to its last complete record;
an unreadable line anywhere else is an error (the file is not one this runner wrote).  If a key
appears twice, the first record is kept.

Summary per method: accuracy = mean over problems of c/n (pass@1), the unbiased pass@k
(`mcmc_llm.tasks.pass_at_k`) for k = 1, 2, 4, ... up to the fewest samples of any problem, mean
output tokens, mean tokens sampled (compute), mean wall time per sample.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

RecordKey = tuple[str, str, int]


def record_key(record: dict[str, Any]) -> RecordKey:
    return (str(record["task_id"]), str(record["method"]), int(record["sample_index"]))


def json_safe(value: Any) -> Any:
    """Non-finite floats as strings ("inf", "-inf", "nan"), tuples as lists, so lines are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def read_records(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a results file (none if it does not exist), without duplicate keys.

    An incomplete last line (no newline after it: a write cut short) that begins like a record
    (`{`) is ignored; with `repair=True` it is also cut from the file so that later appends start
    on a fresh line.  Any other line that is not a results record is an error (ValueError naming
    the line): the file is not one this runner wrote, and it is left untouched."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # `tail` is what follows the last newline
    records, seen, good_end, offset = [], set(), 0, 0
    for number, line in enumerate(complete, start=1):
        offset += len(line) + 1
        if not line.strip():
            good_end = offset
            continue
        try:
            record = json.loads(line)
            key = record_key(record)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a results record ({error}); "
                             "refusing to write to this file (left as it is)") from None
        good_end = offset
        if key in seen:
            warnings.warn(f"{path}:{number}: duplicate record {key}; keeping the first", stacklevel=2)
            continue
        seen.add(key)
        records.append(record)
    if tail.strip() and not tail.lstrip().startswith(b"{"):
        raise ValueError(f"{path}:{len(complete) + 1}: not a results record; refusing to write to this file (left as it is)")
    if repair and good_end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(good_end)
            handle.flush()
            os.fsync(handle.fileno())
    return records


class ResultsWriter:
    """Appends records to a JSONL file, one durable line each (write, flush, fsync)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(json_safe(record), ensure_ascii=False, allow_nan=False)
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class MethodSummary:
    method: str
    kind: str
    problems: int
    samples: int
    accuracy: float
    pass_at: dict[int, float]
    mean_tokens: float
    mean_tokens_sampled: float
    mean_wall_time_s: float


def _mean(values: Iterable[float]) -> float:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


def summarize(records: Sequence[dict[str, Any]], method_order: Sequence[str] | None = None) -> list[MethodSummary]:
    """One `MethodSummary` per method (in `method_order`, then first appearance)."""
    from mcmc_llm.tasks import pass_at_k

    by_method: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_method[record["method"]].append(record)
    order = [m for m in (method_order or []) if m in by_method] + [m for m in by_method if m not in (method_order or [])]
    summaries = []
    for method in order:
        rows = by_method[method]
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for record in rows:
            counts[record["task_id"]][0] += 1
            counts[record["task_id"]][1] += bool(record["passed"])
        fewest = min(n for n, _ in counts.values())
        ks = [2**i for i in range(int(math.log2(fewest)) + 1)]
        pass_at = {k: _mean(pass_at_k(n, c, k) for n, c in counts.values()) for k in ks}
        summaries.append(MethodSummary(
            method=method, kind=str(rows[0].get("kind", "")), problems=len(counts), samples=len(rows),
            accuracy=_mean(c / n for n, c in counts.values()), pass_at=pass_at,
            mean_tokens=_mean(r["length"] for r in rows),
            mean_tokens_sampled=_mean(r.get("compute", {}).get("tokens_sampled") for r in rows),
            mean_wall_time_s=_mean(r.get("wall_time_s") for r in rows),
        ))
    return summaries


def format_summary(summaries: Sequence[MethodSummary]) -> str:
    """A plain-text table: one row per method."""
    if not summaries:
        return "no results"
    ks = sorted({k for s in summaries for k in s.pass_at})
    header = ["method", "kind", "problems", "samples", "accuracy"] + [f"pass@{k}" for k in ks] + [
        "mean tokens", "tokens sampled", "wall s/sample"]
    rows = [header]
    for s in summaries:
        rows.append([s.method, s.kind, str(s.problems), str(s.samples), f"{s.accuracy:.3f}"]
                    + [f"{s.pass_at[k]:.3f}" if k in s.pass_at else "-" for k in ks]
                    + [f"{s.mean_tokens:.1f}", f"{s.mean_tokens_sampled:.1f}", f"{s.mean_wall_time_s:.2f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_path(results_path: str | Path) -> Path:
    path = Path(results_path)
    return path.with_name(path.stem + ".summary.json")


def write_summary(summaries: Sequence[MethodSummary], path: str | Path) -> None:
    payload = [json_safe({**dataclasses.asdict(s), "pass_at": {str(k): v for k, v in s.pass_at.items()}}) for s in summaries]
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
