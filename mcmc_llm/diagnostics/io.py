"""Traces on disk: one compressed `.npz` holding every `samples` and `stats` array, and the same
arrays as ArviZ's netCDF beside it (FILE.trace.npz -> FILE.trace.nc, groups `posterior` = samples and
`sample_stats` = stats, readable by `az.from_netcdf`; see `netcdf_path`).

Layout: `samples/<name>` and `stats/<name>` arrays shaped (chain, draw, ...), plus `__metadata__`, a JSON
string (e.g. prompt id, alpha, kernel name) given to `save_trace`.  `final_state` is not saved (it
holds tensors and models); a loaded Trace has `final_state=None`.  Files load with `allow_pickle=False`,
so object arrays are refused at save time.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Any, Mapping

import numpy as np

_GROUPS = ("samples", "stats")
_METADATA = "__metadata__"


def save_trace(trace: Any, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None) -> str:
    """Write `trace.samples` and `trace.stats` (and JSON-serialisable `metadata`) to `path` (.npz), and
    the same arrays as ArviZ's netCDF at `netcdf_path(path)` (the metadata is in the .npz only).
    Each file is written whole or not at all (a temporary file renamed into place).

    Returns the .npz path written (`.npz` is appended when missing).
    """
    from mcmc_llm.diagnostics.arviz_adapter import to_netcdf

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
    _write_whole(path, lambda temporary: np.savez_compressed(temporary, **arrays))
    _write_whole(netcdf_path(path), lambda temporary: to_netcdf(trace, temporary))
    return path


def netcdf_path(path: str | os.PathLike) -> str:
    """Where `save_trace` writes the netCDF of the trace it saves at `path`: FILE.npz -> FILE.nc."""
    path = os.fspath(path)
    return path[: -len(".npz")] + ".nc" if path.endswith(".npz") else path + ".nc"


def _write_whole(path: str, write) -> None:
    """`write(temporary)` to a hidden temporary file beside `path` (same suffix), renamed to `path`."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp{os.path.splitext(name)[1]}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _read(path: str | os.PathLike) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The arrays and metadata of a saved trace; ValueError naming the file and what is wrong with
    it (missing, empty, not an .npz archive, truncated or corrupt, not a trace)."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError(f"{name}: no such file" if not os.path.exists(name) else f"{name}: not a regular file")
    if os.path.getsize(name) == 0:
        raise ValueError(f"{name} is empty (0 bytes): not a saved trace")
    if not zipfile.is_zipfile(name):
        raise ValueError(f"{name} is not a saved trace: not an .npz (zip) archive, or truncated")
    groups: dict[str, dict[str, np.ndarray]] = {group: {} for group in _GROUPS}
    metadata: dict[str, Any] = {}
    try:
        with np.load(name, allow_pickle=False) as data:
            for key in data.files:
                if key == _METADATA:
                    metadata = json.loads(str(data[key]))
                    continue
                group, _, entry = key.partition("/")
                if group not in groups or not entry:
                    raise ValueError(f"{name} is not a saved trace: unexpected entry {key!r}")
                groups[group][entry] = data[key]
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, zlib.error) as error:
        raise ValueError(f"{name} is truncated or corrupt ({type(error).__name__}: {error})") from None
    except ValueError as error:
        if str(error).startswith(name):
            raise
        raise ValueError(f"{name} is not a readable trace ({error})") from None
    shapes = {array.shape[:2] for group in groups.values() for array in group.values()}
    if not groups["stats"] and not groups["samples"]:
        raise ValueError(f"{name} is not a saved trace: it holds no samples or stats arrays")
    if len(shapes) != 1 or any(array.ndim < 2 for group in groups.values() for array in group.values()):
        raise ValueError(f"{name} is corrupt: its arrays disagree on (chains, steps): {sorted(shapes)}")
    return groups, metadata


def load_trace(path: str | os.PathLike):
    """The `mcmc_llm.core.trace.Trace` saved at `path` (with `final_state=None`)."""
    from mcmc_llm.core.trace import Trace

    groups, _ = _read(path)
    return Trace(samples=groups["samples"], stats=groups["stats"], final_state=None)


def load_trace_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict given to `save_trace` (empty if none)."""
    return _read(path)[1]
