"""The one place that knows which ArviZ is installed.

ArviZ 0.x (0.23 on Python 3.11) builds an `InferenceData` with `az.from_dict(posterior=..., sample_stats=...)`
and plots with `az.plot_trace`.  ArviZ 1.x (Python >= 3.12) builds an `xarray.DataTree` with
`az.from_dict({"posterior": ..., "sample_stats": ...})`, takes its statistics from `arviz_stats` and plots
with `arviz_plots.plot_trace_dist`, which returns a `PlotCollection`.  Everything else in
`mcmc_llm.diagnostics` calls the functions below and never touches ArviZ directly.

The statistics are the same in both versions (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021,
"Rank-normalization, folding, and localization: an improved R-hat"):

- `ess(method="bulk")`: ESS of the rank-normalised split chains (Geyer's initial monotone sequence).
- `ess(method="tail")`: min of the ESS of the indicators `1{x <= q_0.05}` and `1{x <= q_0.95}`.
- `ess(method="mean")`: the classic ESS of the raw split chains, `N_total / tau`.
- `rhat`: max of the rank-normalised split R-hat and the folded split R-hat.

ArviZ is imported lazily (the first call), so importing this module is cheap and never imports torch.
ArviZ never prints from here: what it logs or warns during a call is collected (`arviz_messages`)
for the caller to state, e.g. as a note of `summarize`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

ESS_METHODS = ("bulk", "tail", "mean")
NETCDF_ENGINE = "h5netcdf"  # ArviZ 0.x's default; groups need netCDF-4 (h5netcdf or netCDF4, not scipy)
TAIL_PROBABILITY = 0.05  # tail ESS looks at the 5% and 95% quantiles (ArviZ's default in both versions)


#: The loggers ArviZ writes to: 0.x logs to "arviz" (with its own terminal handler), 1.x to its sub-packages.
ARVIZ_LOGGERS = ("arviz", "arviz_base", "arviz_stats", "arviz_plots")
_sinks: list[list[str]] = []  # the lists of the active `arviz_messages` blocks


def _collect(message: str) -> None:
    for sink in _sinks:
        if message not in sink:
            sink.append(message)


class _Collector(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _collect(record.getMessage())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Run ArviZ without letting it print: its log records (e.g. "Shape validation failed") and its
    warnings go to the active `arviz_messages` lists instead of the terminal; numpy's warnings on
    degenerate chains (0/0, already NaN in the result) are dropped."""
    loggers = [logging.getLogger(name) for name in ARVIZ_LOGGERS]
    own = getattr(_backend().az, "_log", None)  # 0.x logs through its own Logger object, not getLogger("arviz")
    if isinstance(own, logging.Logger):
        loggers.append(own)
    saved = [(logger.handlers, logger.propagate, logger.level, getattr(logger, "cache", None)) for logger in loggers]
    collector = _Collector()
    for logger in loggers:
        logger.handlers, logger.propagate = [collector], False
        logger.setLevel(logging.WARNING)
        if isinstance(getattr(logger, "cache", None), list):
            logger.cache = []  # 0.x logs a message once per process: here every block hears it
    try:
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            yield
        for warning in caught:
            if not issubclass(warning.category, (RuntimeWarning, DeprecationWarning, FutureWarning)):
                _collect(str(warning.message))
    finally:
        for logger, (handlers, propagate, level, cache) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
            if cache is not None:
                logger.cache = cache


@contextlib.contextmanager
def arviz_messages() -> Iterator[list[str]]:
    """A list that collects, without duplicates, what ArviZ logs or warns inside the block (it is
    never printed): the caller decides which of them matter and states them."""
    sink: list[str] = []
    _sinks.append(sink)
    try:
        yield sink
    finally:
        _sinks.remove(sink)


class _ArviZ0:
    """ArviZ 0.x: InferenceData, `az.ess`/`az.rhat` on (chain, draw) arrays, `az.plot_trace`."""

    def __init__(self, az: Any) -> None:
        self.az = az
        self.major = 0

    def from_groups(self, groups: Mapping[str, Mapping[str, np.ndarray]]) -> Any:
        return self.az.from_dict(**groups)

    def group_names(self, data: Any) -> list[str]:
        return list(data.groups())

    def group(self, data: Any, name: str) -> Any:
        return data[name]

    def ess(self, draws: np.ndarray, method: str) -> float:
        return float(np.asarray(self.az.ess(draws, method=method, prob=TAIL_PROBABILITY if method == "tail" else None)))

    def rhat(self, draws: np.ndarray) -> float:
        return float(np.asarray(self.az.rhat(draws)))

    def to_netcdf(self, data: Any, path: str) -> None:
        data.to_netcdf(path, engine=NETCDF_ENGINE)

    def plot_trace(self, data: Any, var_names: Sequence[str] | None) -> Any:
        rows = len(var_names) if var_names else len(self.group(data, "posterior").data_vars)
        axes = self.az.plot_trace(data, var_names=var_names, compact=True, legend=True,
                                  figsize=(12, 2.8 * rows + 0.6), backend_kwargs={"layout": "constrained"})
        return np.ravel(axes)[0].figure


class _ArviZ1(_ArviZ0):
    """ArviZ 1.x: DataTree, `az.ess`/`az.rhat` from arviz_stats, `az.plot_trace_dist` from arviz_plots."""

    def __init__(self, az: Any) -> None:
        super().__init__(az)
        self.major = int(az.__version__.split(".")[0])

    def from_groups(self, groups: Mapping[str, Mapping[str, np.ndarray]]) -> Any:
        return self.az.from_dict(dict(groups))

    def group_names(self, data: Any) -> list[str]:
        if hasattr(data, "children"):  # DataTree
            return list(data.children)
        return list(data.groups())  # an InferenceData handed over by the user

    def group(self, data: Any, name: str) -> Any:
        node = data[name]
        return node.to_dataset() if hasattr(node, "to_dataset") else node

    def ess(self, draws: np.ndarray, method: str) -> float:
        kwargs = {"prob": TAIL_PROBABILITY} if method == "tail" else {}
        return float(np.asarray(self.az.ess(draws, method=method, chain_axis=0, draw_axis=1, **kwargs)))

    def rhat(self, draws: np.ndarray) -> float:
        return float(np.asarray(self.az.rhat(draws, chain_axis=0, draw_axis=1)))

    def plot_trace(self, data: Any, var_names: Sequence[str] | None) -> Any:
        collection = self.az.plot_trace_dist(data, var_names=var_names, kind="kde", backend="matplotlib")
        with contextlib.suppress(Exception):  # the legend is a nicety; its API is still moving in 1.x
            collection.add_legend("chain")
        return collection.viz["figure"].item()


@functools.cache
def _backend() -> _ArviZ0:
    """The adapter for the installed ArviZ: the only version check in the package."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # 0.23 announces the 1.x refactor on import
        import arviz

    major = int(arviz.__version__.split(".")[0])
    return _ArviZ1(arviz) if major >= 1 else _ArviZ0(arviz)


def arviz_major_version() -> int:
    """0 for the InferenceData API (0.x), 1 (or more) for the DataTree API."""
    return _backend().major


def _as_chain_draw(draws: Any) -> np.ndarray:
    """`draws` as a float array (chain, draw): a 1-D input is one chain."""
    array = np.asarray(draws)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"draws must have shape (chain, draw) or (draw,), got {array.shape}")
    return array.astype(np.float64)


def trace_to_arviz(trace: Any, *, var_names: Sequence[str] | None = None) -> Any:
    """An `InferenceData` (ArviZ 0.x) or `DataTree` (ArviZ 1.x) with groups `posterior` and `sample_stats`.

    trace: a `mcmc_llm.core.trace.Trace`, or any object with `samples` and `stats` mappings of
        arrays shaped (chain, draw, ...).  `samples` become the posterior variables, `stats` the
        sample statistics; values and dtypes are kept.  Empty groups are left out.
    var_names: keep only these `samples` (all stats are kept).
    """
    samples = {name: np.asarray(value) for name, value in trace.samples.items()}
    if var_names is not None:
        missing = [name for name in var_names if name not in samples]
        if missing:
            raise KeyError(f"no samples named {missing}; the trace has {sorted(samples)}")
        samples = {name: samples[name] for name in var_names}
    stats = {name: np.asarray(value) for name, value in trace.stats.items()}
    for group, variables in (("samples", samples), ("stats", stats)):
        for name, value in variables.items():
            if value.ndim < 2:
                raise ValueError(f"trace.{group}[{name!r}] must have shape (chain, draw, ...), got {value.shape}")
    groups = {name: variables for name, variables in (("posterior", samples), ("sample_stats", stats)) if variables}
    if not groups:
        raise ValueError("the trace records nothing: both samples and stats are empty")
    with _quiet():
        return _backend().from_groups(groups)


def group_names(data: Any) -> list[str]:
    """The groups of an InferenceData / DataTree, e.g. `["posterior", "sample_stats"]`."""
    return _backend().group_names(data)


def group_dataset(data: Any, name: str) -> Any:
    """Group `name` of an InferenceData / DataTree as an `xarray.Dataset`."""
    return _backend().group(data, name)


def ess(draws: Any, method: str = "bulk") -> float:
    """Effective sample size of one scalar functional, draws shaped (chain, draw) or (draw,).

    method: "bulk" (rank-normalised), "tail" (5% / 95% quantiles) or "mean" (classic, raw values).
    NaN when there are fewer than 4 draws or the draws contain NaN.  A constant input gives N
    (ArviZ's convention), which is meaningless: `summarize` reports NaN for constant functionals.
    """
    if method not in ESS_METHODS:
        raise ValueError(f"method must be one of {ESS_METHODS}, got {method!r}")
    array = _as_chain_draw(draws)
    with _quiet():
        return _backend().ess(array, method)


def rhat(draws: Any) -> float:
    """Rank-normalised split R-hat of one scalar functional, draws shaped (chain, draw).

    NaN with fewer than 2 chains, when every draw is the same (0/0) or the draws contain NaN;
    +inf when each chain is constant but the chains differ.
    """
    array = _as_chain_draw(draws)
    if array.shape[0] < 2:
        return float("nan")
    with _quiet():
        return _backend().rhat(array)


def to_netcdf(trace_or_data: Any, path: str | os.PathLike) -> str:
    """Write a Trace (converted with `trace_to_arviz`), an InferenceData or a DataTree to `path` as
    netCDF-4 (one netCDF group per ArviZ group), readable by `az.from_netcdf`; returns the path."""
    data = trace_to_arviz(trace_or_data) if hasattr(trace_or_data, "samples") else trace_or_data
    path = os.fspath(path)
    with _quiet():
        _backend().to_netcdf(data, path)
    return path


def plot_trace(trace_or_data: Any, var_names: Sequence[str] | None = None, path: str | os.PathLike | None = None,
               *, title: str | None = None) -> Any:
    """ArviZ's trace plot (marginal density and draws per chain) of `var_names`, saved as a PNG at `path`.

    trace_or_data: a Trace (converted with `trace_to_arviz`), an InferenceData or a DataTree.
    var_names: posterior variables to show (default: all of them).
    Returns `path` when given (the figure is then closed), else the matplotlib Figure.
    """
    if hasattr(trace_or_data, "samples") and hasattr(trace_or_data, "stats"):
        data = trace_to_arviz(trace_or_data)
    else:
        data = trace_or_data
    if var_names is not None:
        var_names = list(var_names)
    with _quiet():
        figure = _backend().plot_trace(data, var_names)
    if title:
        figure.suptitle(title)
    if path is None:
        return figure
    figure.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path
