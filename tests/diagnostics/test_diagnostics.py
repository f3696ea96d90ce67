"""Tests of mcmc_llm.diagnostics: ESS / R-hat on chains with known answers, flags, exact comparisons, I/O, plots.

Seeds are fixed, so every test is deterministic.  Statistical tolerances are derived from the sample size
(stated next to each test) with a false-failure rate of about 1e-4 or less for a fresh seed.
"""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

from mcmc_llm.core.trace import Trace  # noqa: E402
from mcmc_llm.diagnostics import (  # noqa: E402
    Thresholds, count_states, ess, format_summary, integrated_autocorrelation_time, kl_divergence, rhat, summarize,
    total_variation, trace_to_arviz, tv_curve, tv_noise_floor,
)
from mcmc_llm.diagnostics import arviz_adapter, plots  # noqa: E402
from mcmc_llm.diagnostics.io import load_trace, load_trace_metadata, save_trace  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ar1(phi, chains, draws, seed):
    """Stationary Gaussian AR(1) chains x_t = phi x_{t-1} + e_t: tau = (1 + phi) / (1 - phi)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(chains, draws))
    start = rng.normal(size=chains) / math.sqrt(1 - phi ** 2)  # the stationary law N(0, 1 / (1 - phi^2))
    return lfilter([1.0], [1.0, -phi], noise, axis=1, zi=(phi * start)[:, None])[0]


def relative_tolerance(tau, total_draws, sigmas=4.0):
    """`sigmas` standard errors of an autocorrelation-time (hence ESS) estimate.

    Sokal: var(tau_hat) / tau^2 ~ 2 (2M + 1) / N for a summation window M; Geyer's initial sequence
    (ArviZ) truncates at a comparable lag.  We take M = 5 tau, Sokal's window, so 4 standard errors
    give a two-sided false-failure rate of about 6e-5 under the normal approximation.
    """
    return sigmas * math.sqrt(2 * (2 * 5 * tau + 1) / total_draws)


# --- ESS, tau and R-hat on chains with known answers ---------------------------------------------------

@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_ess_of_ar1_chains_matches_the_theory(phi):
    chains, draws = 4, 50_000
    x = ar1(phi, chains, draws, seed=int(phi * 10))
    tau = (1 + phi) / (1 - phi)
    expected = chains * draws / tau  # ESS / N -> (1 - phi) / (1 + phi)
    tolerance = relative_tolerance(tau, chains * draws)
    for method in ("bulk", "mean"):  # normal scores of Gaussian draws are ~ the draws: same ESS
        assert ess(x, method) == pytest.approx(expected, rel=tolerance), method
    assert ess(x, "tail") > 0


def direct_arviz_ess(draws, method):
    """ArviZ's own `ess` of a (chain, draw) array, called directly (tail: the 5% and 95% quantiles,
    ArviZ 0.x's default; ArviZ 1.x needs `prob` and the axes spelt out for a bare array)."""
    import arviz as az

    if arviz_adapter.arviz_major_version() >= 1:
        extra = {"prob": 0.05} if method == "tail" else {}
        return float(az.ess(draws, method=method, chain_axis=0, draw_axis=1, **extra))
    return float(az.ess(draws, method=method))


def test_summary_bulk_and_tail_ess_are_arvizs():
    """`summarize` reports ArviZ's bulk ESS as ess_bulk and ArviZ's tail ESS as ess_tail (not swapped, not
    one for both).  On Gaussian AR(1) draws (phi = 0.5) the two differ by a factor ~1.8: the 5% / 95%
    quantile indicators decorrelate faster than the draws, so a mix-up cannot pass."""
    x = ar1(0.5, chains=4, draws=1000, seed=0)
    bulk, tail = direct_arviz_ess(x, "bulk"), direct_arviz_ess(x, "tail")
    assert abs(tail - bulk) > 0.1 * max(bulk, tail)  # the test has teeth: bulk and tail clearly differ
    trace = Trace(samples={"log_p": x}, stats={"accepted": np.ones(x.shape, dtype=bool)})
    diag = summarize(trace).functionals["log_p"]
    assert diag.ess_bulk == pytest.approx(bulk, rel=1e-9)
    assert diag.ess_tail == pytest.approx(tail, rel=1e-9)
    assert ess(x, "bulk") == pytest.approx(bulk, rel=1e-9) and ess(x, "tail") == pytest.approx(tail, rel=1e-9)


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_integrated_autocorrelation_time_of_ar1(phi):
    chains, draws = 4, 50_000
    x = ar1(phi, chains, draws, seed=100 + int(phi * 10))
    tau = (1 + phi) / (1 - phi)
    tolerance = relative_tolerance(tau, chains * draws)
    assert integrated_autocorrelation_time(x) == pytest.approx(tau, rel=tolerance)
    assert integrated_autocorrelation_time(x, method="ess") == pytest.approx(tau, rel=tolerance)


def test_autocorrelation_time_is_nan_for_a_constant_chain_and_rejects_bad_input():
    assert math.isnan(integrated_autocorrelation_time(np.ones((2, 50))))
    with pytest.raises(ValueError):
        integrated_autocorrelation_time(np.ones((2, 1)))
    with pytest.raises(ValueError):
        integrated_autocorrelation_time(np.ones((2, 50)), method="batch")


def test_rhat_is_one_for_well_mixed_chains_and_large_for_diverging_chains():
    x = ar1(0.5, 4, 4_000, seed=7)
    # For chains from one law R-hat - 1 = O(1/N) (here ~1e-3): 0.01 leaves a wide margin.
    assert abs(rhat(x) - 1) < 0.01
    assert abs(rhat(np.repeat(x[:1], 4, axis=0)) - 1) < 0.01  # identical copies: no between-chain variance
    diverging = x + 4.0 * np.arange(4)[:, None]  # chain means 0, 4, 8, 12 with sd ~1.15
    assert rhat(diverging) > 2  # rank-normalised R-hat saturates (~2.8 for 4 fully separated chains)


# --- summarize: acceptance tables and flags ----------------------------------------------------------

def power_like_trace(seed=0, chains=4, stages=3, steps_per_stage=20):
    rng = np.random.default_rng(seed)
    draws = stages * steps_per_stage
    accepted = rng.random((chains, draws)) < 0.5
    samples = {
        "log_p": ar1(0.3, chains, draws, seed),
        "log_target": 4 * ar1(0.3, chains, draws, seed + 1),
        "length": rng.integers(5, 50, size=(chains, draws)),
    }
    stats = {
        "accepted": accepted,
        "acceptance_probability": np.where(accepted, 0.8, 0.2),
        "log_accept_ratio": rng.normal(size=(chains, draws)),
        "cut_index": rng.integers(0, 5, size=(chains, draws)),
        "tokens_resampled": np.full((chains, draws), 3),
        "stage": np.repeat(np.arange(stages), steps_per_stage)[None].repeat(chains, 0),
        "relative_cut": rng.random((chains, draws)),
    }
    return Trace(samples=samples, stats=stats)


def test_acceptance_tables_have_known_values():
    trace = power_like_trace()
    trace.stats["accepted"][:] = False
    trace.stats["accepted"][:, 20:40] = True  # all of stage 1 accepted
    trace.stats["acceptance_probability"] = np.where(trace.stats["accepted"], 0.8, 0.2)
    trace.stats["relative_cut"][:] = 0.95
    trace.stats["relative_cut"][:, ::2] = 0.05
    summary = summarize(trace, num_cut_bins=10)
    assert summary.acceptance_rate == pytest.approx(1 / 3)
    assert [(cell.key, cell.num_moves, cell.acceptance_rate) for cell in summary.by_stage] == [
        (0, 80, 0.0), (1, 80, 1.0), (2, 80, 0.0)]
    assert summary.by_relative_cut[0].key == (0.0, 0.1) and summary.by_relative_cut[0].num_moves == 120
    assert summary.by_relative_cut[9].num_moves == 120
    assert all(cell.num_moves == 0 and math.isnan(cell.acceptance_rate) for cell in summary.by_relative_cut[1:9])
    assert summary.tokens_resampled == 3 * 4 * 60
    assert summary.mean_acceptance_probability == pytest.approx(0.2 + 0.6 / 3)


def test_relative_cut_of_one_falls_in_the_last_bin():
    trace = power_like_trace()
    trace.stats["relative_cut"][:] = 1.0
    cells = summarize(trace, num_cut_bins=4).by_relative_cut
    assert [cell.num_moves for cell in cells] == [0, 0, 0, 240]


def test_a_healthy_trace_raises_no_flag():
    summary = summarize(power_like_trace())
    assert summary.ok, summary.flags
    assert set(summary.functionals) == {"log_p", "log_target", "length"}
    assert all(d.rhat < 1.1 and d.ess_bulk > 10 for d in summary.functionals.values())


def test_stuck_chains_are_flagged():
    trace = power_like_trace()
    trace.stats["accepted"][2] = False  # chain 2 never moves ...
    trace.samples["log_p"][2] = 10.0  # ... so its functionals are frozen, here far from the other chains
    trace.samples["log_target"][:] = 1.5  # every chain constant at the same value: the chains agree (R-hat 1)
    summary = summarize(trace)
    assert [flag.subject for flag in summary.flags_of_kind("zero_acceptance")] == ["chain 2"]
    constant = {flag.subject for flag in summary.flags_of_kind("constant_chain")}
    assert "log_p, chain 2" in constant
    assert {f"log_target, chain {c}" for c in range(4)} <= constant
    assert summary.functionals["log_target"].rhat == 1.0  # 0/0 computed; defined as 1: the chains agree
    assert math.isnan(summary.functionals["log_target"].ess_bulk)  # ArviZ's N would be meaningless
    assert "log_target" not in {flag.subject for flag in summary.flags_of_kind("rhat_nonfinite")}
    assert any(note.startswith("log_target: every chain holds one value") for note in summary.notes)
    assert "log_p" in {flag.subject for flag in summary.flags_of_kind("rhat_high")}
    assert not summary.ok


def test_frozen_chains_at_different_values_give_infinite_rhat_flag():
    trace = power_like_trace()
    trace.samples["log_p"][:] = np.arange(4)[:, None]
    summary = summarize(trace)
    assert summary.functionals["log_p"].rhat == math.inf
    assert "log_p" in {flag.subject for flag in summary.flags_of_kind("rhat_nonfinite")}


def test_thresholds_are_configurable_and_low_ess_is_flagged():
    trace = power_like_trace()
    assert summarize(trace, thresholds=Thresholds(min_ess=1e6)).flags_of_kind("low_ess")
    assert summarize(trace, thresholds=Thresholds(rhat_max=0.5)).flags_of_kind("rhat_high")


def test_stage_restricts_ess_and_rhat_to_that_stage():
    trace = power_like_trace()
    trace.samples["log_p"][:, :40] += 100 * np.arange(4)[:, None]  # early stages disagree, the last does not
    assert summarize(trace).functionals["log_p"].rhat > 1.3
    last = summarize(trace, stage=-1)
    assert last.functionals["log_p"].rhat < 1.2
    assert last.draws_used.startswith("stage 2 (20 draws")
    with pytest.raises(ValueError):
        summarize(trace, stage=7)


def test_format_summary_is_a_readable_table():
    trace = power_like_trace()
    trace.stats["accepted"][1] = False
    text = format_summary(summarize(trace))
    for expected in ("4 chains x 60 draws", "Acceptance by stage", "Acceptance by relative cut position",
                     "ess_bulk", "rhat", "[zero_acceptance] chain 1", "[0.90, 1.00]"):
        assert expected in text
    assert "none" in format_summary(summarize(power_like_trace()))


def test_summary_to_dict_is_plain_data():
    data = summarize(power_like_trace()).to_dict()
    assert data["num_chains"] == 4 and data["functionals"]["log_p"]["name"] == "log_p"


# --- ArviZ round trip and I/O -------------------------------------------------------------------------

def test_trace_to_arviz_round_trip_preserves_values():
    trace = power_like_trace()
    data = trace_to_arviz(trace)
    assert {"posterior", "sample_stats"} <= set(arviz_adapter.group_names(data))
    posterior = arviz_adapter.group_dataset(data, "posterior")
    stats = arviz_adapter.group_dataset(data, "sample_stats")
    for name, value in trace.samples.items():
        np.testing.assert_array_equal(posterior[name].values, value)
    for name, value in trace.stats.items():
        np.testing.assert_array_equal(stats[name].values, value)


def test_save_and_load_trace_round_trip(tmp_path):
    trace = power_like_trace()
    path = save_trace(trace, tmp_path / "run", metadata={"alpha": 4.0, "prompt": "p0"})
    assert path.endswith("run.npz")
    loaded = load_trace(path)
    assert isinstance(loaded, Trace) and loaded.final_state is None
    for group in ("samples", "stats"):
        original, restored = getattr(trace, group), getattr(loaded, group)
        assert set(original) == set(restored)
        for name in original:
            np.testing.assert_array_equal(restored[name], original[name])
            assert restored[name].dtype == original[name].dtype
    assert load_trace_metadata(path) == {"alpha": 4.0, "prompt": "p0"}
    assert format_summary(summarize(loaded)) == format_summary(summarize(trace))


def test_save_trace_refuses_object_arrays(tmp_path):
    trace = Trace(samples={"text": np.array([["a", None]], dtype=object)}, stats={})
    with pytest.raises(ValueError):
        save_trace(trace, tmp_path / "bad.npz")


# --- exact comparisons ---------------------------------------------------------------------------------

def test_total_variation_known_answers():
    assert total_variation({"a": 1, "b": 1}, {"a": 1.0}) == pytest.approx(0.5)
    assert total_variation({"a": 3, "b": 1}, {"a": 0.25, "b": 0.75}) == pytest.approx(0.5)
    assert total_variation(np.array([2, 2, 0]), np.array([0.5, 0.5, 0.0])) == pytest.approx(0.0)
    assert total_variation({"c": 5}, {"a": 0.5, "b": 0.5}) == pytest.approx(1.0)  # disjoint supports
    assert total_variation(count_states(["a", "a", "b", "b"]), {"a": 2, "b": 2}) == 0.0  # unnormalised exact
    with pytest.raises(ValueError):
        total_variation({"a": -1}, {"a": 1})


def test_kl_divergence_known_answers():
    p = {"a": 0.5, "b": 0.5}
    # plug-in (no smoothing): KL(p || q) with q = (3/4, 1/4)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_divergence({"a": 3, "b": 1}, p, pseudocount=0) == pytest.approx(expected)
    assert kl_divergence({"a": 4}, p, pseudocount=0) == math.inf
    # Jeffreys smoothing over K = 2 states: q~ = ((4 + 1/2) / 5, (0 + 1/2) / 5) = (0.9, 0.1)
    assert kl_divergence({"a": 4}, p) == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))
    # an observed state outside the support joins the K = 2 states: q~(a) = (1 + 1/2) / (2 + 1) = 1/2
    assert kl_divergence({"a": 1, "z": 1}, {"a": 1.0}, pseudocount=0.5) == pytest.approx(math.log(2))
    assert kl_divergence({"a": 50, "b": 50}, p) == pytest.approx(0.0, abs=1e-12)


def test_tv_curve_known_answer():
    # 4 chains, 3 steps; the exact law is uniform on {a, b}
    states = [["a", "a", "b"], ["a", "b", "b"], ["a", "a", "z"], ["a", "b", "z"]]
    tokens = np.array([[1, 2, 3]] * 2 + [[3, 2, 1]] * 2)
    curve = tv_curve(states, {"a": 1, "b": 1}, tokens=tokens)
    # step 0: all a -> 0.5; step 1: half a, half b -> 0; step 2: half b, half z (outside support) -> 0.5
    np.testing.assert_allclose(curve.tv, [0.5, 0.0, 0.5])
    np.testing.assert_allclose(curve.tokens, [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(curve.step, [0, 1, 2])
    assert curve.band is None


def test_tv_curve_accepts_token_arrays_and_gives_a_bootstrap_band():
    # states as padded token arrays (chain, draw, length): each row is one state, matched via `key`
    states = np.zeros((6, 2, 3), dtype=np.int64)
    states[:3, :, 0] = 1  # half the chains at (1, 0, 0), half at (0, 0, 0)
    exact = {(1,): 0.5, (): 0.5}
    key = lambda row: tuple(int(t) for t in row if t != 0)  # noqa: E731 - strip padding
    curve = tv_curve(states, exact, key=key, num_bootstrap=200, seed=3)
    np.testing.assert_allclose(curve.tv, [0.0, 0.0])
    low, high = curve.band
    assert np.all(low <= curve.tv + 1e-12) and np.all(high >= curve.tv) and np.all(high <= 1)
    assert curve.tokens is None
    with pytest.raises(ValueError):
        tv_curve([["a"], ["a", "b"]], exact)


def test_tv_noise_floor_known_answers():
    # one draw from a uniform law on 2 states: TV is exactly 1/2
    assert tv_noise_floor({"a": 1, "b": 1}, 1) == pytest.approx(0.5)
    # many draws: E TV ~ sqrt(K / (2 pi N)) for K states -> small
    assert tv_noise_floor({"a": 1, "b": 1}, 10_000) < 0.01


def test_tv_curve_of_exact_draws_sits_at_the_noise_floor():
    rng = np.random.default_rng(11)
    exact = {0: 0.5, 1: 0.3, 2: 0.2}
    states = rng.choice(3, p=[0.5, 0.3, 0.2], size=(200, 50))
    curve = tv_curve(states, exact)
    floor = tv_noise_floor(exact, 200)
    # the mean of 50 independent TVs has sd ~ floor * 0.75 / sqrt(50) ~ 0.1 floor: 5 sd of margin is 0.5 floor
    assert curve.tv.mean() == pytest.approx(floor, rel=0.5)


# --- plots ---------------------------------------------------------------------------------------------

def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000


def test_plots_write_png_files(tmp_path):
    trace = power_like_trace()
    assert_png(plots.plot_trace(trace, ["log_p", "length"], tmp_path / "trace.png"))
    assert_png(plots.plot_acceptance_heatmap(trace, tmp_path / "heat.png"))
    assert_png(plots.plot_ess_vs_steps({1: 12.0, 5: 40.0, 10: 75.0}, tmp_path / "ess1.png"))
    assert_png(plots.plot_ess_vs_steps({1: {"log_p": 3, "length": 5}, 10: {"log_p": 30, "length": 25}},
                                       tmp_path / "ess2.png"))
    assert_png(plots.plot_ess_vs_steps({1: [2, 3, 4], 100: [50, 60, 70]}, tmp_path / "ess3.png"))
    states = np.random.default_rng(0).integers(0, 3, size=(30, 20))
    curve = tv_curve(states, {0: 1, 1: 1, 2: 1}, tokens=np.ones((30, 20)), num_bootstrap=20)
    curves = {"uniform cut": curve, "restart": (np.arange(20) * 2.0, curve.tv[::-1], curve.band)}
    assert_png(plots.plot_tv_vs_tokens(curves, tmp_path / "tv.png", noise_floor=0.1, log_x=True))


def test_acceptance_grid_counts_moves_per_cell():
    trace = power_like_trace()
    stages, rate, moves = plots.acceptance_grid(trace, num_cut_bins=5)
    np.testing.assert_array_equal(stages, [0, 1, 2])
    assert moves.sum() == 4 * 60 and moves.shape == (3, 5)
    accepted = trace.stats["accepted"].astype(float)
    assert np.nansum(rate * moves) == pytest.approx(accepted.sum())


def test_chains_that_only_accept_identical_proposals_are_flagged():
    """Accepted-but-identical moves (e.g. near-greedy proposals at alpha = 64) must not read as mixing."""
    from mcmc_llm.lm.toy import load_toy
    from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample

    config = PowerSamplerConfig(alpha=64.0, block_size=4, max_new_tokens=8, mcmc_steps=10, cut_rule="restart")
    result = power_sample(load_toy("trigram"), [[]], config, chains_per_prompt=4, seed=0)
    summary = summarize(result.trace)
    assert summary.acceptance_rate > 0.5
    assert summary.moved_rate < summary.acceptance_rate
    assert summary.flags_of_kind("never_moved"), format_summary(summary)
    assert "the sequence changed on" in format_summary(summary)
