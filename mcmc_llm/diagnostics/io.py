"""Traces on disk: one compressed `.npz` holding every `samples` and `stats` array.

Layout: `samples/<name>` and `stats/<name>` arrays shaped (chain, draw, ...), plus `__metadata__`, a JSON
string (e.g. prompt id, alpha, kernel name) given to `save_trace`.  `final_state` is not saved (it
holds tensors and models); a loaded Trace has `final_state=None`.  Files load with `allow_pickle=False`,
so object arrays are refused at save time.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

_GROUPS = ("samples", "stats")
_METADATA = "__metadata__"


def save_trace(trace: Any, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None) -> str:
    """Write `trace.samples` and `trace.stats` (and JSON-serialisable `metadata`) to `path` (.npz).

    Returns the path written (numpy appends `.npz` when missing).
    """
    arrays: dict[str, np.ndarray] = {}
    for group in _GROUPS:
        for name, value in getattr(trace, group).items():
            array = np.asarray(value)
            if array.dtype == object:
                raise ValueError(f"trace.{group}[{name!r}] is an object array; only numeric arrays can be saved")
            arrays[f"{group}/{name}"] = array
    arrays[_METADATA] = np.array(json.dumps(dict(metadata or {})))
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    np.savez_compressed(path, **arrays)
    return path


def _read(path: str | os.PathLike) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    groups: dict[str, dict[str, np.ndarray]] = {group: {} for group in _GROUPS}
    metadata: dict[str, Any] = {}
    with np.load(os.fspath(path), allow_pickle=False) as data:
        for key in data.files:
            if key == _METADATA:
                metadata = json.loads(str(data[key]))
                continue
            group, _, name = key.partition("/")
            if group not in groups or not name:
                raise ValueError(f"{os.fspath(path)} is not a saved trace: unexpected entry {key!r}")
            groups[group][name] = data[key]
    return groups, metadata


def load_trace(path: str | os.PathLike):
    """The `mcmc_llm.core.trace.Trace` saved at `path` (with `final_state=None`)."""
    from mcmc_llm.core.trace import Trace

    groups, _ = _read(path)
    return Trace(samples=groups["samples"], stats=groups["stats"], final_state=None)


def load_trace_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict given to `save_trace` (empty if none)."""
    return _read(path)[1]
