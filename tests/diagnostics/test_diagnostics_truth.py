"""Diagnostics that tell the truth: float noise between chains, ArviZ's warnings, stage selection,
the trace plot, the netCDF beside a saved trace.  Seeded, synthetic traces; each test takes well under
a second except the netCDF ones (h5netcdf import)."""

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mcmc_llm.core.trace import Trace  # noqa: E402
from mcmc_llm.diagnostics import format_summary, plots, summarize, trace_to_arviz  # noqa: E402
from mcmc_llm.diagnostics.io import netcdf_path, save_trace  # noqa: E402
from mcmc_llm.diagnostics.noise import NOISE_RTOL, within_tolerance  # noqa: E402
from mcmc_llm.diagnostics.stages import parse_stages, select_stages  # noqa: E402


def same_text_chains(difference: float, draws: int = 12) -> Trace:
    """Two chains that hold the same 12-token text throughout; their log p differ by `difference`
    (the same sequence scored in batches of different shapes)."""
    log_p = np.array([[-35.25] * draws, [-35.25 + difference] * draws])
    stats = {"accepted": np.zeros((2, draws), dtype=bool), "proposal_differs": np.zeros((2, draws), dtype=bool),
             "stage": np.repeat(np.arange(draws // 4), 4)[None].repeat(2, 0)}
    return Trace({"log_p": log_p, "length": np.full((2, draws), 12)}, stats)


def staged_trace(seed: int = 0, chains: int = 4, stages: int = 3, per_stage: int = 60) -> Trace:
    """AR(1) chains whose mean shifts with the stage, so every stage selection gives different numbers."""
    rng = np.random.default_rng(seed)
    draws = stages * per_stage
    stage = np.repeat(np.arange(stages), per_stage)
    x = np.zeros((chains, draws))
    for t in range(1, draws):
        x[:, t] = 0.6 * x[:, t - 1] + rng.normal(size=chains)
    x += 0.8 * stage[None] + 0.3 * np.arange(chains)[:, None]
    stats = {"accepted": rng.random((chains, draws)) < 0.5, "stage": stage[None].repeat(chains, 0),
             "tokens_resampled": rng.integers(0, 6, size=(chains, draws))}
    return Trace({"log_p": -30.0 + x, "length": rng.integers(8, 14, size=(chains, draws))}, stats)


# --- float noise between chains -------------------------------------------------------------------

def test_two_chains_on_the_same_text_agree_despite_float_noise():
    summary = summarize(same_text_chains(1.5e-6), stage="last")
    for name in ("log_p", "length"):
        assert summary.functionals[name].rhat == 1.0
        assert summary.functionals[name].constant_chains == (0, 1)
    assert not summary.flags_of_kind("rhat_nonfinite")
    assert any("chains agree within 0.0001 relative" in note for note in summary.notes)
    text = format_summary(summary)
    assert "inf" not in text and "Notes:" in text


def test_chains_apart_by_more_than_the_tolerance_do_not_agree():
    gap = 3 * NOISE_RTOL * 35.25  # three times the tolerance at |log p| = 35.25
    summary = summarize(same_text_chains(gap))
    assert summary.functionals["log_p"].rhat == float("inf")
    assert [flag.subject for flag in summary.flags_of_kind("rhat_nonfinite")] == ["log_p"]
    assert summary.functionals["length"].rhat == 1.0  # the lengths are equal


def test_within_tolerance_is_relative_and_exact_for_integers():
    assert within_tolerance(np.array([-100.0, -100.0 + 0.9e-2]))  # 1e-4 * 100 = 1e-2
    assert not within_tolerance(np.array([-100.0, -100.0 + 1.1e-2]))
    assert within_tolerance(np.array([0.0, 0.9e-4])) and not within_tolerance(np.array([0.0, 1.1e-4]))
    assert not within_tolerance(np.array([20000, 20001]))  # integers: equal or not
    assert not within_tolerance(np.array([np.nan]))


# --- ArviZ's warnings -------------------------------------------------------------------------------

def test_arviz_shape_warning_becomes_a_note_and_is_not_printed(capfd):
    rng = np.random.default_rng(3)
    for _ in range(2):  # ArviZ 0.x logs a message once per process: the second summary must still note it
        summary = summarize(Trace({"log_p": rng.normal(size=(2, 3))}, {}))
        assert any(note.startswith("too few draws") and "(2, 3)" in note for note in summary.notes), summary.notes
    out, err = capfd.readouterr()
    assert "Shape validation" not in out + err


def test_a_healthy_trace_has_no_notes():
    assert summarize(staged_trace()).notes == ()


# --- stages ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stages", ["all", "last", 1])
def test_summary_agrees_with_az_summary_on_the_same_stages(stages):
    trace = staged_trace()
    summary = summarize(trace, stage=stages)
    table = az.summary(trace_to_arviz(select_stages(trace, stages)), var_names=["log_p"], kind="diagnostics",
                       round_to="none")
    mine = summary.functionals["log_p"]
    assert mine.rhat == pytest.approx(float(table.loc["log_p", "r_hat"]), rel=1e-9)
    assert mine.ess_bulk == pytest.approx(float(table.loc["log_p", "ess_bulk"]), rel=1e-9)
    assert mine.ess_tail == pytest.approx(float(table.loc["log_p", "ess_tail"]), rel=1e-9)


def test_stage_selections_differ_and_say_which_draws():
    trace = staged_trace()
    described = {s: summarize(trace, stage=s).draws_used for s in ("all", "last", 0)}
    assert described == {"all": "all draws (every stage)", "last": "stage 2 (60 draws per chain)",
                         0: "stage 0 (60 draws per chain)"}
    rhats = {s: summarize(trace, stage=s).functionals["log_p"].rhat for s in ("all", "last", 0)}
    assert len(set(rhats.values())) == 3 and rhats["all"] > rhats["last"]  # the stage shift inflates R-hat


def test_bad_stages_are_one_line_errors():
    assert parse_stages("LAST") == "last" and parse_stages("2") == 2
    with pytest.raises(ValueError, match=r"must be 'last', 'all' or a stage index .* got 'first'"):
        parse_stages("first")
    with pytest.raises(ValueError, match="no step is at stage 7 on every chain; the stages recorded are 0, 1, 2"):
        summarize(staged_trace(), stage=7)


# --- the trace plot -------------------------------------------------------------------------------

def test_trace_plot_colours_chains_marks_stages_and_steps_discrete_values():
    trace = staged_trace(chains=4)
    figure = plots.plot_trace(trace, ["log_p", "length", "accepted", "tokens_resampled"], title="t")
    axes = figure.axes
    assert len(axes) == 8  # (marginal, draws) per quantity
    for row, discrete in enumerate((False, True, True, True)):
        left, right = axes[2 * row], axes[2 * row + 1]
        chain_lines = [line for line in right.lines if line.get_label().startswith("chain ")]
        assert [line.get_label() for line in chain_lines] == [f"chain {c}" for c in range(4)]
        assert len({line.get_color() for line in chain_lines}) == 4  # one colour per chain
        boundaries = [line for line in right.lines if not line.get_label().startswith("chain ")]
        assert sorted(line.get_xdata()[0] for line in boundaries) == [59.5, 119.5]  # stage 0|1 and 1|2
        styles = {line.get_drawstyle() for line in chain_lines}
        assert styles == ({"steps-mid"} if discrete else {"default"})
        assert not left.lines  # no density curve; discrete: frequency bars, continuous: histograms
        assert left.get_ylabel() == ("fraction of steps" if discrete else "density")


def test_trace_plot_names_a_missing_quantity():
    with pytest.raises(ValueError, match=r"no samples or stats named \['entropy'\]"):
        plots.plot_trace(staged_trace(), ["log_p", "entropy"])


# --- netCDF beside the .npz -----------------------------------------------------------------------

def test_save_trace_writes_netcdf_that_arviz_reads_back(tmp_path):
    trace = staged_trace(chains=2)
    written = save_trace(trace, tmp_path / "run.jsonl.trace.npz", metadata={"alpha": 4.0})
    assert netcdf_path(written) == str(tmp_path / "run.jsonl.trace.nc")
    data = az.from_netcdf(tmp_path / "run.jsonl.trace.nc")
    for group, arrays in (("posterior", trace.samples), ("sample_stats", trace.stats)):
        dataset = data[group]
        assert set(dataset.data_vars) == set(arrays)
        for name, value in arrays.items():
            np.testing.assert_array_equal(dataset[name].values, value)
            assert dataset[name].dtype == value.dtype


def test_a_save_leaves_exactly_the_two_files(tmp_path):
    """Both files are written to hidden temporaries and renamed: nothing else is left beside them."""
    save_trace(staged_trace(chains=2), tmp_path / "out.jsonl.trace.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl.trace.nc", "out.jsonl.trace.npz"]
