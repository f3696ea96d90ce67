"""The ArviZ adapter under both ArviZ APIs: 0.x (InferenceData, Python 3.11) and 1.x (DataTree, Python >= 3.12).

Runs without torch: `bash .ci/arviz1.sh` runs this directory in a Python 3.12 venv that has arviz>=1,
numpy, matplotlib and pytest, with mcmc_llm installed by `pip install --no-deps -e .`.  The main suite
runs it under ArviZ 0.23.  Traces here are plain objects with `samples` / `stats` (the adapter is
duck-typed), because `mcmc_llm.core` imports torch.
"""

import os
import subprocess
import sys
import types

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from mcmc_llm.diagnostics import arviz_adapter  # noqa: E402
from mcmc_llm.diagnostics.summary import format_summary, summarize  # noqa: E402


def make_trace(chains=4, draws=50, seed=0):
    rng = np.random.default_rng(seed)
    samples = {
        "log_p": rng.normal(size=(chains, draws)),
        "length": rng.integers(1, 20, size=(chains, draws)),
        "vector": rng.normal(size=(chains, draws, 3)),
    }
    stats = {
        "accepted": rng.random((chains, draws)) < 0.4,
        "stage": np.repeat(np.arange(5), draws // 5)[None].repeat(chains, 0),
        "relative_cut": rng.random((chains, draws)),
        "cut_index": rng.integers(0, 20, size=(chains, draws)),
    }
    return types.SimpleNamespace(samples=samples, stats=stats, final_state=None)


def deterministic_draws():
    """A fixed (4, 1000) input whose ESS / R-hat ArviZ 0.23.4 computed (values pinned below)."""
    t = np.arange(4000, dtype=np.float64)
    return (np.sin(0.37 * t) + 0.5 * np.sin(0.011 * t ** 1.3)).reshape(4, 1000) + 0.2 * np.arange(4)[:, None]


def test_importing_diagnostics_does_not_import_torch():
    code = ("import sys, mcmc_llm.diagnostics, mcmc_llm.diagnostics.plots; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_roundtrip_preserves_groups_values_and_dtypes():
    trace = make_trace()
    data = arviz_adapter.trace_to_arviz(trace)
    assert {"posterior", "sample_stats"} <= set(arviz_adapter.group_names(data))
    posterior = arviz_adapter.group_dataset(data, "posterior")
    stats = arviz_adapter.group_dataset(data, "sample_stats")
    assert set(posterior.data_vars) == set(trace.samples)
    assert set(stats.data_vars) == set(trace.stats)
    assert dict(posterior.sizes)["chain"] == 4 and dict(posterior.sizes)["draw"] == 50
    for name, value in trace.samples.items():
        np.testing.assert_array_equal(posterior[name].values, value)
        assert posterior[name].dims[:2] == ("chain", "draw")
    for name, value in trace.stats.items():
        np.testing.assert_array_equal(stats[name].values, value)
        assert stats[name].dtype == value.dtype


def test_var_names_selects_posterior_variables():
    data = arviz_adapter.trace_to_arviz(make_trace(), var_names=["log_p"])
    assert set(arviz_adapter.group_dataset(data, "posterior").data_vars) == {"log_p"}
    with pytest.raises(KeyError):
        arviz_adapter.trace_to_arviz(make_trace(), var_names=["nope"])


PINNED = {"bulk": 623.5168982492955, "tail": 1112.0894369132086, "mean": 635.7631677247467, "rhat": 1.0502262296382032}


def test_ess_and_rhat_match_the_values_pinned_under_arviz_0_23():
    draws = deterministic_draws()
    # Computed with ArviZ 0.23.4; ArviZ 1.x (arviz_stats) implements the same estimators.
    assert arviz_adapter.ess(draws, "bulk") == pytest.approx(PINNED["bulk"], rel=1e-6)
    assert arviz_adapter.ess(draws, "tail") == pytest.approx(PINNED["tail"], rel=1e-6)
    assert arviz_adapter.ess(draws, "mean") == pytest.approx(PINNED["mean"], rel=1e-6)
    assert arviz_adapter.rhat(draws) == pytest.approx(PINNED["rhat"], rel=1e-6)


def test_rhat_separates_mixed_from_diverging_chains_and_is_nan_when_undefined():
    rng = np.random.default_rng(1)
    mixed = rng.normal(size=(4, 1000))
    assert abs(arviz_adapter.rhat(mixed) - 1.0) < 0.01
    diverging = mixed + 5.0 * np.arange(4)[:, None]
    assert arviz_adapter.rhat(diverging) > 2.0
    assert np.isnan(arviz_adapter.rhat(np.ones((4, 100))))  # every draw equal: 0/0
    assert np.isnan(arviz_adapter.rhat(mixed[:1]))  # one chain
    assert np.isnan(arviz_adapter.ess(np.ones((4, 2)), "bulk"))  # fewer than 4 draws
    with pytest.raises(ValueError):
        arviz_adapter.ess(mixed, "median")


def test_plot_trace_writes_a_png(tmp_path):
    path = tmp_path / "trace.png"
    assert arviz_adapter.plot_trace(make_trace(), ["log_p", "length"], path) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_summarize_runs_under_this_arviz():
    trace = make_trace()
    trace.stats["accepted"][1] = False
    summary = summarize(trace)
    assert set(summary.functionals) == {"log_p", "length"}  # the vector sample is not scalar
    assert [flag.subject for flag in summary.flags_of_kind("zero_acceptance")] == ["chain 1"]
    assert "Acceptance by stage" in format_summary(summary)


def test_a_trace_written_as_netcdf_reads_back_with_az_from_netcdf(tmp_path):
    """`to_netcdf` writes an InferenceData (0.x) or a DataTree (1.x) that `az.from_netcdf` reads back."""
    import arviz as az

    trace = make_trace()
    path = arviz_adapter.to_netcdf(trace, tmp_path / "trace.nc")
    data = az.from_netcdf(path)
    for group, arrays in (("posterior", trace.samples), ("sample_stats", trace.stats)):
        dataset = arviz_adapter.group_dataset(data, group)
        for name, value in arrays.items():
            np.testing.assert_array_equal(np.asarray(dataset[name].values), value)
