"""The ESS helpers of `mcmc_llm.testing.chains` and the summary's ESS against ArviZ's own `ess`, under
whichever ArviZ is installed: 0.23 in the main suite, 1.x in `bash .ci/arviz1.sh` (Python 3.12, no torch).

`_arviz_ess` has one branch per ArviZ API (`arviz.ess(array)` for 0.x, `arviz_stats.base.array_stats.ess`
for 1.x); `effective_sample_size_of_mean` goes through `mcmc_llm.diagnostics.arviz_adapter` and falls back to
`_arviz_ess` when the diagnostics cannot be imported; `mcse_moment_check` builds its MCSE from that ESS.
Each is compared with `arviz.ess` called directly on the same draws.  Without torch, so traces are plain
objects and AR(1) chains are made with numpy alone.
"""

import math
import subprocess
import sys
import types

import numpy as np
import pytest

from mcmc_llm.diagnostics import arviz_adapter
from mcmc_llm.diagnostics.summary import summarize
from mcmc_llm.testing import chains as chain_checks

METHODS = ("bulk", "tail", "mean")


def ar1(phi, chains, draws, seed, dims=None):
    """Stationary Gaussian AR(1) chains x_t = phi x_{t-1} + e_t, shaped (chain, draw) or (chain, draw, dims)."""
    rng = np.random.default_rng(seed)
    shape = (chains,) if dims is None else (chains, dims)
    x = np.empty((chains, draws) + shape[1:])
    x[:, 0] = rng.normal(size=shape) / math.sqrt(1 - phi ** 2)
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + rng.normal(size=shape)
    return x


def direct_ess(draws, method):
    """`arviz.ess` itself on a (chain, draw) array: 0.x takes the bare array (tail: 5% / 95% by default);
    1.x needs the axes and, for the tail, `prob`."""
    import arviz as az

    if arviz_adapter.arviz_major_version() >= 1:
        extra = {"prob": 0.05} if method == "tail" else {}
        return float(az.ess(draws, method=method, chain_axis=0, draw_axis=1, **extra))
    return float(az.ess(draws, method=method))


def test_testing_chains_imports_without_torch():
    code = ("import sys, mcmc_llm.testing, mcmc_llm.testing.chains; "
            "assert 'torch' not in sys.modules, 'mcmc_llm.testing imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("method", METHODS)
def test_arviz_ess_is_arvizs_ess(method):
    x = ar1(0.6, chains=4, draws=500, seed=3)
    expected = direct_ess(x, method)
    assert chain_checks._arviz_ess(x, method) == pytest.approx(expected, rel=1e-9)
    assert arviz_adapter.ess(x, method) == pytest.approx(expected, rel=1e-9)  # the adapter agrees


def test_arviz_ess_uses_the_installed_arviz_api():
    """Under 1.x the arviz_stats branch runs, under 0.x the arviz.ess branch (so each leg covers one)."""
    try:
        import arviz_stats  # noqa: F401
    except ImportError:
        assert arviz_adapter.arviz_major_version() == 0
    else:
        assert arviz_adapter.arviz_major_version() >= 1


def test_effective_sample_size_of_mean_per_dim_and_without_the_adapter(monkeypatch):
    x = ar1(0.8, chains=4, draws=400, seed=5, dims=2)
    expected = [direct_ess(x[..., d], "mean") for d in range(2)]
    assert abs(expected[0] - expected[1]) > 1.0  # two different numbers, so dims cannot be mixed up
    np.testing.assert_allclose(chain_checks.effective_sample_size_of_mean(x), expected, rtol=1e-9)
    np.testing.assert_allclose(chain_checks.effective_sample_size_of_mean(x[..., 1]), expected[1:], rtol=1e-9)
    # the fallback when mcmc_llm.diagnostics cannot be imported: _arviz_ess, the same numbers
    monkeypatch.setitem(sys.modules, "mcmc_llm.diagnostics.arviz_adapter", None)  # import -> ImportError
    np.testing.assert_allclose(chain_checks.effective_sample_size_of_mean(x), expected, rtol=1e-9)


def test_mcse_moment_check_uses_arvizs_ess():
    phi, chains, draws = 0.8, 4, 1000
    x = ar1(phi, chains, draws, seed=7)
    ess = direct_ess(x, "mean")
    mcse = x.std(ddof=1) / math.sqrt(ess)
    result = chain_checks.mcse_moment_check(x, 0.0)
    assert result.ess == pytest.approx((ess,), rel=1e-9)
    assert result.mcse == pytest.approx((mcse,), rel=1e-9)
    assert result.z_scores == pytest.approx((x.mean() / mcse,), rel=1e-9)
    # ESS of the mean of an AR(1) chain: N (1 - phi) / (1 + phi) = 444; an iid-draws MCSE would be 3x too small
    assert 0.5 < ess / (chains * draws * (1 - phi) / (1 + phi)) < 2.0
    assert result.passed  # a correct sampler (|z| ~ N(0, 1)) against a threshold of ~3.9
    shifted = chain_checks.mcse_moment_check(x, x.mean() - 6 * mcse)
    assert not shifted.passed and shifted.statistic == pytest.approx(6.0, rel=1e-9)


def test_summary_ess_is_arvizs_bulk_and_tail():
    """The summary's ess_bulk / ess_tail are ArviZ's bulk / tail ESS; they differ by > 10% on these draws."""
    x = ar1(0.5, chains=4, draws=1000, seed=0)
    bulk, tail = direct_ess(x, "bulk"), direct_ess(x, "tail")
    assert abs(tail - bulk) > 0.1 * max(bulk, tail)
    trace = types.SimpleNamespace(samples={"log_p": x}, stats={"accepted": np.ones(x.shape, dtype=bool)})
    diag = summarize(trace).functionals["log_p"]
    assert diag.ess_bulk == pytest.approx(bulk, rel=1e-9)
    assert diag.ess_tail == pytest.approx(tail, rel=1e-9)
