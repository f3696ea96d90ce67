"""PNG figures of a run's diagnostics (matplotlib, no display needed).

Each function writes one PNG at `path` and returns `path`.  Figures are built on
`matplotlib.figure.Figure` (Agg), never through pyplot, so they work headless and leave the caller's
pyplot state alone.  ArviZ's own trace plot is `arviz_adapter.plot_trace`; `plot_trace` here draws
chains in distinct colours, marks stage boundaries and draws discrete quantities as steps.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mcmc_llm.diagnostics.exact import TVCurve
from mcmc_llm.diagnostics.acceptance import relative_cut_bin_index, relative_cut_bins

PathLike = str | os.PathLike


def _save(figure: Figure, path: PathLike) -> PathLike:
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


def is_discrete(values: np.ndarray) -> bool:
    """True for integer or boolean values, or floats that are all whole numbers (e.g. a saved length)."""
    values = np.asarray(values)
    if values.dtype.kind in "biu":
        return True
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else np.array([0.5])
    return finite.size > 0 and bool(np.all(finite == np.round(finite)))


def stage_boundaries(trace: Any) -> list[int]:
    """Steps t at which chain 0's stage changes (stage[t] != stage[t-1]); none without stats `stage`."""
    if "stage" not in trace.stats:
        return []
    stage = np.asarray(trace.stats["stage"])[0]
    return [int(t) for t in np.flatnonzero(stage[1:] != stage[:-1]) + 1]


def _trace_row(left: Any, right: Any, name: str, values: np.ndarray, boundaries: Sequence[int]) -> None:
    """One quantity: its marginal per chain (left) and its value at every step per chain (right)."""
    values = np.asarray(values, dtype=np.float64)
    discrete = is_discrete(values)
    steps = np.arange(values.shape[1])
    colours = [f"C{c % 10}" for c in range(values.shape[0])]
    if discrete:  # frequencies of each value, side by side per chain: no density over discrete values
        levels = np.unique(values[np.isfinite(values)])
        width = 0.8 / values.shape[0] * (np.min(np.diff(levels)) if levels.size > 1 else 1.0)
        for c, colour in enumerate(colours):
            counts = [(values[c] == level).sum() / max(np.isfinite(values[c]).sum(), 1) for level in levels]
            left.bar(levels + (c - (values.shape[0] - 1) / 2) * width, counts, width=width, color=colour)
        left.set_ylabel("fraction of steps")
    else:
        finite = values[np.isfinite(values)]
        bins = np.histogram_bin_edges(finite, bins=min(30, max(5, finite.size // 10))) if finite.size else 10
        for c, colour in enumerate(colours):
            left.hist(values[c][np.isfinite(values[c])], bins=bins, density=True, histtype="step", color=colour)
        left.set_ylabel("density")
    left.set_xlabel(name)
    for c, colour in enumerate(colours):
        right.plot(steps, values[c], color=colour, linewidth=1.0, label=f"chain {c}",
                   drawstyle="steps-mid" if discrete else "default")
    for step in boundaries:
        right.axvline(step - 0.5, color="0.4", linestyle=":", linewidth=1.0)
    if discrete:
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel(name)
    right.set_xlabel("MH step" + ("  (dotted lines: stage boundaries)" if boundaries else ""))


def plot_trace(trace: Any, var_names: Sequence[str] | None = None, path: PathLike | None = None,
               *, title: str | None = "Trace plot: marginal and draws per chain") -> Any:
    """A trace plot, one row per quantity: left its marginal per chain, right its value per step per chain.

    trace: any object with `samples` and `stats` of (chain, draw) arrays; var_names: entries of
    either (default: every scalar sample).  Each chain has its own colour (legend on the first row);
    dotted vertical lines mark stage boundaries (stats `stage`).  Discrete quantities (length, accept
    indicators, token counts: integer, boolean or whole-number values) are drawn as step plots with
    value frequencies on the left; continuous ones (log p) as lines with a histogram density.
    Returns `path` when given (the PNG is written there), else the matplotlib Figure.
    """
    arrays = {**trace.stats, **trace.samples}
    names = list(var_names) if var_names is not None else [
        name for name, value in trace.samples.items() if np.ndim(value) == 2]
    missing = [name for name in names if name not in arrays]
    if missing or not names:
        raise ValueError(f"no samples or stats named {missing}; the trace has {sorted(arrays)}")
    figure = Figure(figsize=(12, 2.6 * len(names) + 0.8), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(names), 2, width_ratios=(1, 3)))
    boundaries = stage_boundaries(trace)
    for row, name in enumerate(names):
        _trace_row(axes[row, 0], axes[row, 1], name, np.asarray(arrays[name]), boundaries)
    axes[0, 1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    return figure if path is None else _save(figure, path)


def acceptance_grid(trace: Any, num_cut_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stages, acceptance rate [stage, bin], number of moves [stage, bin]) from stats
    `accepted`, `relative_cut` and `stage` (a trace without `stage` is one stage 0)."""
    stats = trace.stats
    for name in ("accepted", "relative_cut"):
        if name not in stats:
            raise ValueError(f"the acceptance heatmap needs stats[{name!r}]")
    accepted = np.asarray(stats["accepted"], dtype=np.float64)
    stage = np.asarray(stats["stage"]) if "stage" in stats else np.zeros(accepted.shape, dtype=np.int64)
    bins = relative_cut_bin_index(stats["relative_cut"], num_cut_bins)
    stages = np.unique(stage)
    moves = np.zeros((stages.size, num_cut_bins), dtype=np.int64)
    hits = np.zeros((stages.size, num_cut_bins))
    valid = (bins >= 0) & ~np.isnan(accepted)
    rows = np.searchsorted(stages, stage[valid])
    np.add.at(moves, (rows, bins[valid]), 1)
    np.add.at(hits, (rows, bins[valid]), accepted[valid])
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(moves > 0, hits / np.maximum(moves, 1), np.nan)
    return stages, rate, moves


def plot_acceptance_heatmap(trace: Any, path: PathLike, *, num_cut_bins: int = 10,
                            title: str = "MH acceptance rate by stage and cut position") -> PathLike:
    """Heatmap of the acceptance rate, rows = stage (block k), columns = bins of cut index / length.

    Cells with no move are left blank (grey); when the grid is small each cell shows its rate and count.
    """
    stages, rate, moves = acceptance_grid(trace, num_cut_bins)
    edges = relative_cut_bins(num_cut_bins)
    figure = Figure(figsize=(max(6.0, 0.7 * num_cut_bins + 2), max(3.0, 0.45 * stages.size + 1.8)))
    axes = figure.subplots()
    axes.set_facecolor("0.85")
    image = axes.imshow(np.ma.masked_invalid(rate), aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                        extent=(0.0, 1.0, -0.5, stages.size - 0.5), interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axes)
    colorbar.set_label("acceptance rate")
    axes.set_yticks(np.arange(stages.size), [str(int(k)) for k in stages])
    axes.set_xticks(edges[:: max(1, num_cut_bins // 10)])
    axes.set_xlabel("relative cut position  (cut index / current length)")
    axes.set_ylabel("stage k (block, 0-based)")
    axes.set_title(title)
    if stages.size * num_cut_bins <= 200:
        width = 1.0 / num_cut_bins
        for row in range(stages.size):
            for column in range(num_cut_bins):
                if moves[row, column]:
                    value = rate[row, column]
                    axes.text((column + 0.5) * width, row, f"{value:.2f}\nn={moves[row, column]}", ha="center",
                              va="center", fontsize=7, color="white" if value < 0.6 else "black")
    return _save(figure, path)


def plot_ess_vs_steps(results: Mapping[int, Any], path: PathLike, *, ylabel: str = "bulk ESS",
                      title: str = "Effective sample size vs MH steps per stage") -> PathLike:
    """ESS against N_MCMC (MH steps per stage).

    results: `{n_mcmc: ess}`, where ess is a number, a mapping `{functional: ess}` (one line per
    functional), or a sequence of replicate values (median line with a min-max band).
    """
    if not results:
        raise ValueError("results is empty")
    steps = np.array(sorted(results))
    figure = Figure(figsize=(6.5, 4.2))
    axes = figure.subplots()
    first = results[steps[0]]
    if isinstance(first, Mapping):
        for name in first:
            axes.plot(steps, [results[n].get(name, np.nan) for n in steps], marker="o", label=name)
    elif np.ndim(first) == 1:
        values = [np.asarray(results[n], dtype=np.float64) for n in steps]
        axes.fill_between(steps, [v.min() for v in values], [v.max() for v in values], alpha=0.25,
                          label="min-max over replicates")
        axes.plot(steps, [np.median(v) for v in values], marker="o", label="median")
    else:
        axes.plot(steps, [float(results[n]) for n in steps], marker="o", label=ylabel)
    if steps.size > 1 and steps.max() / max(steps.min(), 1) >= 20:
        axes.set_xscale("log")
    axes.set_xlabel("N_MCMC (MH steps per stage)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # outside: never over a curve
    return _save(figure, path)


def _curve_parts(curve: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    if isinstance(curve, TVCurve):
        x = curve.tokens if curve.tokens is not None else curve.step
        return np.asarray(x, dtype=np.float64), curve.tv, curve.band
    tokens, tv, *rest = curve
    return np.asarray(tokens, dtype=np.float64), np.asarray(tv, dtype=np.float64), rest[0] if rest else None


def plot_tv_vs_tokens(curves: Mapping[str, Any], path: PathLike, *, noise_floor: float | None = None,
                      log_x: bool = False, xlabel: str = "tokens spent per chain (mean over chains)",
                      title: str = "Total variation to the exact target vs tokens spent") -> PathLike:
    """TV to the exact law against tokens spent, one line per kernel.

    curves: `{kernel_name: TVCurve}` or `{kernel_name: (tokens, tv)}` or `(tokens, tv, (low, high))`
        with an optional band drawn as a shaded region.
    noise_floor: drawn as a dashed line, e.g. `tv_noise_floor(exact, num_chains)`: the TV that exact
        independent draws from that many chains would show.
    """
    if not curves:
        raise ValueError("curves is empty")
    figure = Figure(figsize=(9.0, 4.5))
    axes = figure.subplots()
    for name, curve in curves.items():
        x, tv, band = _curve_parts(curve)
        (line,) = axes.plot(x, tv, label=name)
        if band is not None:
            axes.fill_between(x, band[0], band[1], color=line.get_color(), alpha=0.2)
    if noise_floor is not None:
        axes.axhline(noise_floor, color="0.3", linestyle="--", label="noise floor (exact draws)")
    if log_x:
        axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("total variation to exact")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # outside: never over a curve
    return _save(figure, path)
