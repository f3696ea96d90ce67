"""Diagnostics of MCMC runs: ArviZ conversion, ESS / R-hat, acceptance tables, exact comparisons, plots.

Importing this package imports numpy only (ArviZ on first use, matplotlib with `plots`), never torch,
and nothing else of `mcmc_llm`: the functions take any object with a trace's `samples` and `stats`
arrays (`trace_to_arviz(trace)` is how a `core.trace.Trace` becomes ArviZ data; core never imports
this package).

- `arviz_adapter`: `trace_to_arviz`, `ess`, `rhat`, `plot_trace`, `to_netcdf`, `arviz_messages` for ArviZ
  0.x and 1.x alike.
- `acceptance`: acceptance tables (overall, per stage, per relative-cut bin).
- `stages`: which stages' draws ESS / R-hat use (`select_stages`, `parse_stages`).
- `summary`: `summarize(trace) -> TraceSummary`, `format_summary(summary) -> str`.
- `exact`: `total_variation`, `kl_divergence`, `tv_curve`, `tv_noise_floor`,
  `integrated_autocorrelation_time`.
- `io` (import it explicitly: it builds `core.trace.Trace`s): `save_trace`, `load_trace`,
  `load_trace_metadata` (.npz; `save_trace` also writes ArviZ's netCDF beside it).
- `records` (import it explicitly): traces of the per-step data in `mcmc-llm run` result records.
- `noise`: the float-noise tolerance (`NOISE_RTOL`) and its application.
- `plots` (import it explicitly): trace plot, acceptance heatmap, ESS vs N_MCMC, TV vs tokens.
"""

from mcmc_llm.diagnostics.acceptance import AcceptanceCell
from mcmc_llm.diagnostics.arviz_adapter import arviz_major_version, ess, rhat, trace_to_arviz
from mcmc_llm.diagnostics.exact import (
    TVCurve, count_states, integrated_autocorrelation_time, kl_divergence, normalize, total_variation, tv_curve,
    tv_noise_floor,
)
from mcmc_llm.diagnostics.summary import (
    Flag, FunctionalDiagnostics, Thresholds, TraceSummary, format_summary, summarize,
)

__all__ = [
    "AcceptanceCell", "Flag", "FunctionalDiagnostics", "TVCurve", "Thresholds", "TraceSummary",
    "arviz_major_version", "count_states", "ess", "format_summary", "integrated_autocorrelation_time",
    "kl_divergence", "normalize", "rhat", "summarize",
    "total_variation", "trace_to_arviz", "tv_curve", "tv_noise_floor",
]
