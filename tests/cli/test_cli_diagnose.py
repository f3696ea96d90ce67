"""`mcmc-llm diagnose` end to end on saved runs, and `mcmc-llm grade` when a grader raises.

The runs are synthetic and cheap: random-walk Metropolis chains on a Gaussian per prompt, recorded with
the fields and layout `mcmc-llm sample --save-trace` writes (samples `log_p`, `length`, `log_target`;
stats `accepted`, `acceptance_probability`, `proposal_differs`, `stage`, ...; metadata
`chains_per_prompt`), saved with the library's `save_trace` next to a JSONL of `sample` records that
agrees with the trace.  The CLI runs in-process (`mcmc_llm.cli.main`), its output captured.  Every
number `diagnose` prints is checked against ArviZ's `ess` / `rhat` called directly on the draws the
command is documented to use (the last stage of each prompt's chains, unless --stages says otherwise).
`diagnose` on `mcmc-llm run` results and `grade`'s per-method summary are checked at the end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mcmc_llm.cli import main
from mcmc_llm.core.trace import Trace
from mcmc_llm.diagnostics import arviz_adapter
from mcmc_llm.diagnostics.io import save_trace

CHAINS, PROMPTS, STAGES, STEPS_PER_STAGE = 4, 2, 3, 80
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- synthetic saved runs -------------------------------------------------------------------------------

def mh_trace(seed: int = 0, prompts: int = PROMPTS, chains: int = CHAINS) -> Trace:
    """Random-walk Metropolis (step 2.4) on N(3 p, 1) for prompt p: well mixed, acceptance ~0.45."""
    rng = np.random.default_rng(seed)
    rows, draws = prompts * chains, STAGES * STEPS_PER_STAGE
    centre = np.repeat(3.0 * np.arange(prompts), chains)
    x, accepted, probability = np.empty((rows, draws)), np.empty((rows, draws), dtype=bool), np.empty((rows, draws))
    current = centre + rng.normal(size=rows)
    for t in range(draws):
        proposal = current + 2.4 * rng.normal(size=rows)
        ratio = np.exp(-0.5 * ((proposal - centre) ** 2 - (current - centre) ** 2))
        probability[:, t] = np.minimum(1.0, ratio)
        accepted[:, t] = rng.random(rows) < probability[:, t]
        current = np.where(accepted[:, t], proposal, current)
        x[:, t] = current
    log_p = -20.0 - 0.5 * (x - centre[:, None]) ** 2
    samples = {"log_p": log_p, "length": np.rint(12 + 2 * (x - centre[:, None])).astype(np.int64),
               "log_target": 4.0 * log_p}
    stats = {
        "accepted": accepted, "acceptance_probability": probability,
        "proposal_differs": np.ones((rows, draws), dtype=bool),
        "stage": np.repeat(np.arange(STAGES), STEPS_PER_STAGE)[None].repeat(rows, 0),
        "relative_cut": rng.random((rows, draws)), "cut_index": rng.integers(0, 12, size=(rows, draws)),
        "tokens_resampled": rng.integers(1, 8, size=(rows, draws)),
        "extension_tokens": np.zeros((rows, draws), dtype=np.int64),
    }
    return Trace(samples=samples, stats=stats)


def freeze(trace: Trace, row: int, value: float, seed: int = 1, length: int = 12) -> None:
    """Chain `row` never accepts: its functionals keep one value, log p up to float noise (1e-7 relative,
    the same sequence scored in batches of different shapes), which `diagnose` must not count as movement."""
    rng = np.random.default_rng(seed)
    draws = trace.num_draws
    trace.stats["accepted"][row] = False
    trace.stats["acceptance_probability"][row] = 0.01
    trace.samples["log_p"][row] = value * (1 + 1e-7 * rng.uniform(-1, 1, draws))
    trace.samples["log_target"][row] = 4.0 * trace.samples["log_p"][row]
    trace.samples["length"][row] = length


def save_run(trace: Trace, directory: Path, name: str = "run.jsonl", chains: int = CHAINS) -> Path:
    """The run's JSONL (one `sample` record per chain) with its trace beside it, as `sample --save-trace` does."""
    jsonl = directory / name
    save_trace(trace, f"{jsonl}.trace.npz", metadata={"chains_per_prompt": chains, "model": "synthetic", "seed": 0})
    records = [{"prompt_index": row // chains, "chain": row % chains, "tokens": [1, 2], "length": 2,
                "log_p": float(trace.samples["log_p"][row, -1]), "steps": trace.num_draws}
               for row in range(trace.num_chains)]
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in records))
    return jsonl


def diagnose(capsys, *argv: str) -> tuple[int, str]:
    code = main(["diagnose", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err == "", err
    return code, out


def prompt_sections(out: str) -> list[str]:
    return out.split("\n-- prompt ")[1:]


def functional_row(section: str, name: str) -> list[str]:
    """The cells of `name`'s row in the functionals table: name, mean, sd, ess_bulk, ess_tail, rhat, constant."""
    table = section.split("Functionals (")[1]
    rows = [line.split() for line in table.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, table
    return rows[0]


# --- ArviZ called directly ------------------------------------------------------------------------------

def direct(draws: np.ndarray) -> dict[str, float]:
    """mean, sd, bulk / tail ESS (5% / 95% quantiles) and rank-normalised R-hat of (chain, draw) `draws`."""
    import arviz as az

    draws = np.asarray(draws, dtype=np.float64)
    if int(az.__version__.split(".")[0]) >= 1:
        axes = {"chain_axis": 0, "draw_axis": 1}
        ess = {m: float(az.ess(draws, method=m, **axes, **({"prob": 0.05} if m == "tail" else {})))
               for m in ("bulk", "tail")}
        rhat = float(az.rhat(draws, **axes))
    else:
        ess = {m: float(az.ess(draws, method=m)) for m in ("bulk", "tail")}
        rhat = float(az.rhat(draws))
    return {"mean": draws.mean(), "sd": draws.std(ddof=1), "ess_bulk": ess["bulk"], "ess_tail": ess["tail"],
            "rhat": rhat}


def assert_row_matches(section: str, name: str, draws: np.ndarray) -> dict[str, float]:
    """`name`'s printed row equals the direct computation, to the printed digits."""
    row = functional_row(section, name)
    expected = direct(draws)
    printed = dict(zip(("mean", "sd", "ess_bulk", "ess_tail", "rhat"), map(float, row[1:6])))
    for key, digits in (("mean", 3), ("sd", 3), ("ess_bulk", 1), ("ess_tail", 1), ("rhat", 3)):
        assert printed[key] == pytest.approx(expected[key], abs=0.51 * 10 ** -digits), (name, key, row, expected)
    assert row[6] == "-"  # no constant chain
    return expected


# --- diagnose: a healthy run ----------------------------------------------------------------------------

def test_diagnose_a_saved_run_prints_arvizs_numbers_and_no_flag(tmp_path, capsys):
    trace = mh_trace(seed=0)
    jsonl = save_run(trace, tmp_path)
    code, out = diagnose(capsys, jsonl)
    assert code == 0
    assert out.startswith(f"== {jsonl}.trace.npz ({PROMPTS} prompt(s) x {CHAINS} chain(s), {trace.num_draws} steps")
    sections = prompt_sections(out)
    assert len(sections) == PROMPTS
    last = trace.stats["stage"][0] == STAGES - 1
    for prompt, section in enumerate(sections):
        rows = slice(prompt * CHAINS, (prompt + 1) * CHAINS)
        accepted = trace.stats["accepted"][rows]
        assert section.startswith(f"{prompt}\nTrace: {CHAINS} chains x {trace.num_draws} draws; "
                                  f"ESS / R-hat on stage {STAGES - 1} ({STEPS_PER_STAGE} draws per chain)")
        assert f"Acceptance: {accepted.mean():.3f} over {accepted.size} moves" in section
        assert "per chain: " + " ".join(f"{rate:.2f}" for rate in accepted.mean(axis=1)) in section
        assert f"Tokens resampled: {trace.stats['tokens_resampled'][rows].sum():.0f}" in section
        for name in ("log_p", "log_target", "length"):
            expected = assert_row_matches(section, name, trace.samples[name][rows][:, last])
            assert expected["rhat"] < 1.1 and min(expected["ess_bulk"], expected["ess_tail"]) > 10  # well mixed
        assert "constant chains):\n  none\n" in section  # no flag
        assert f"plots written: {jsonl}.prompt{prompt}.trace.png, {jsonl}.prompt{prompt}.acceptance.png" in section
        for kind in ("trace", "acceptance"):
            assert Path(f"{jsonl}.prompt{prompt}.{kind}.png").read_bytes()[:8] == PNG_MAGIC
    assert "WARNING" not in out and "[" not in out.split("Flags (")[-1]
    # bulk and tail ESS are different numbers here, so a column mix-up cannot pass
    row = functional_row(sections[0], "log_p")
    assert abs(float(row[3]) - float(row[4])) > 0.1 * float(row[3])


def test_diagnose_all_stages_uses_every_draw(tmp_path, capsys):
    trace = mh_trace(seed=0)
    code, out = diagnose(capsys, save_run(trace, tmp_path), "--stages", "all", "--no-plots")
    assert code == 0 and "plots written" not in out and not list(tmp_path.glob("*.png"))
    assert "ESS / R-hat on --stages all)" in out.splitlines()[0]
    for prompt, section in enumerate(prompt_sections(out)):
        rows = slice(prompt * CHAINS, (prompt + 1) * CHAINS)
        assert "ESS / R-hat on all draws" in section
        assert_row_matches(section, "log_p", trace.samples["log_p"][rows])


def test_diagnose_one_stage_and_a_stage_the_run_lacks(tmp_path, capsys):
    trace = mh_trace(seed=0)
    jsonl = save_run(trace, tmp_path)
    code, out = diagnose(capsys, jsonl, "--stages", "1", "--no-plots")
    assert code == 0 and "--stages all uses every draw, as az.summary(trace_to_arviz(trace)) does" in out.splitlines()[0]
    first = prompt_sections(out)[0]
    assert f"ESS / R-hat on stage 1 ({STEPS_PER_STAGE} draws per chain)" in first
    assert_row_matches(first, "log_p", trace.samples["log_p"][:CHAINS][:, trace.stats["stage"][0] == 1])
    with pytest.raises(SystemExit) as stopped:
        main(["diagnose", str(jsonl), "--stages", "5"])
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "no step is at stage 5 on every chain; the stages recorded are 0, 1, 2" in err
    assert "Traceback" not in err and not list(tmp_path.glob("*.png"))


# --- diagnose: stuck runs -------------------------------------------------------------------------------

def test_diagnose_flags_a_stuck_chain_in_its_own_prompt_only(tmp_path, capsys):
    """Prompt 0's chain 2 never accepts (its log p moves by float noise only); prompt 1 is healthy.  The
    stuck chain is flagged under prompt 0, nothing under prompt 1, and the run ends with a WARNING line.
    The flags are warnings, not errors: `diagnose` exits 0 (it has no option that changes that)."""
    trace = mh_trace(seed=0)
    freeze(trace, row=2, value=-21.5)
    code, out = diagnose(capsys, save_run(trace, tmp_path), "--no-plots")
    assert code == 0
    first, second = prompt_sections(out)
    assert "per chain: " + " ".join(f"{r:.2f}" for r in trace.stats["accepted"][:CHAINS].mean(axis=1)) in first
    moves = trace.num_draws
    assert f"  [zero_acceptance] chain 2 accepted none of its {moves} moves" in first
    for name in ("log_p", "length", "log_target"):
        assert f"  [constant_chain] {name} never changed on chain(s) 2\n" in first + "\n"  # float noise is no move
        assert functional_row(first, name)[6] == "2"
    assert "[zero_acceptance] chain 0" not in first and "[zero_acceptance] chain 1" not in first
    assert "constant chains):\n  none\n" in second  # prompt 1: no flag
    assert out.rstrip().endswith("WARNING: some chains or functionals were flagged (see above)")


def test_diagnose_chains_frozen_at_different_values(tmp_path, capsys):
    """Every chain frozen at its own value: each is flagged, R-hat is inf (B / 0), ESS flagged low.  Given the
    folder that holds the trace (no JSONL beside it)."""
    trace = mh_trace(seed=0, prompts=1)
    for row in range(CHAINS):
        freeze(trace, row=row, value=-20.0 - row, seed=row, length=10 + row)
    save_trace(trace, tmp_path / "frozen.trace.npz", metadata={"chains_per_prompt": CHAINS})
    code, out = diagnose(capsys, tmp_path, "--no-plots")
    assert code == 0
    (section,) = prompt_sections(out)
    assert f"Acceptance: 0.000 over {CHAINS * trace.num_draws} moves" in section
    for chain in range(CHAINS):
        assert f"  [zero_acceptance] chain {chain} accepted none of its {trace.num_draws} moves" in section
    for name in ("log_p", "log_target", "length"):
        assert f"  [constant_chain] {name} never changed on chain(s) 0,1,2,3" in section
        assert f"  [rhat_nonfinite] R-hat of {name} is inf (constant or frozen chains?)" in section
        assert f"  [low_ess] {name}: bulk ESS " in section
        assert functional_row(section, name)[5:7] == ["inf", "0,1,2,3"]
    assert out.rstrip().endswith("WARNING: some chains or functionals were flagged (see above)")


# --- grade: a grader that raises on one record ----------------------------------------------------------

def test_grade_reports_a_grader_failure_on_its_record_and_grades_the_others(tmp_path, capsys, monkeypatch):
    """The arithmetic grader raises on task 1 only: that record gets status "error" with a detail naming
    the exception, is skipped as "grader failed" (out of the one denominator), and the other records are
    graded as usual.  No traceback; a grader failure is not malformed input, so the exit code is 0
    (docs/tasks.md: only malformed records make `grade` exit 1)."""
    from mcmc_llm.tasks.arithmetic import ArithmeticTask

    grade = ArithmeticTask.grade

    def flaky_grade(self, problem, completion):
        if problem.task_id == "arithmetic/d1/s0/1":
            raise RuntimeError("grader exploded")
        return grade(self, problem, completion)

    monkeypatch.setattr(ArithmeticTask, "grade", flaky_grade)
    answers = {0: 6, 1: 11, 2: 99, 3: 13}  # the answers of arithmetic/d1/s0/{0,1,3} are 6, 11, 13; 99 is wrong
    lines = [json.dumps({"task_id": f"arithmetic/d1/s0/{i}", "completion": f"\\boxed{{{a}}}"}) for i, a in answers.items()]
    path = tmp_path / "completions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code = main(["grade", "--task", "arithmetic", "--option", "difficulty=1", "--input", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err == ""
    assert code == 0
    *records, summary = [json.loads(line) for line in out.splitlines()]
    assert [r["task_id"] for r in records] == [f"arithmetic/d1/s0/{i}" for i in answers]
    assert [(r["status"], r["passed"]) for r in records] == [
        ("correct", True), ("error", False), ("wrong", False), ("correct", True)]
    assert records[1]["detail"] == "grader failed: RuntimeError('grader exploded')"
    summary = summary["summary"]
    assert summary["records"] == 4 and summary["graded"] == 3 and summary["passed"] == 2
    assert summary["skipped"] == 1 and summary["skipped_reasons"] == {"grader failed": 1}
    assert summary["statuses"] == {"correct": 2, "error": 1, "wrong": 1}
    assert summary["accuracy"] == pytest.approx(2 / 3) and summary["pass@k"]["1"] == pytest.approx(2 / 3)


# --- diagnose on `mcmc-llm run` results -----------------------------------------------------------------

def results_record(task_id: str, method: str, index: int, accepted=None, stages=None) -> dict:
    """A `mcmc-llm run` record; with `accepted`, a power record listing its MH steps."""
    record = {"task_id": task_id, "method": method, "kind": "power" if accepted else "base", "sample_index": index,
              "fingerprint": "f", "completion": "1", "passed": False, "status": "wrong", "length": 1, "diagnostics": {}}
    if accepted:
        record["diagnostics"] = {"step_accepted": accepted, "step_stage": stages,
                                 "step_relative_cut": [0.1 * (i % 10) for i in range(len(accepted))]}
    return record


def test_diagnose_run_results_per_method_and_problem(tmp_path, capsys):
    steps = [0, 0, 1, 1, 2, 2]
    chains = {("p/0", 0): [1, 0, 1, 1, 0, 1], ("p/0", 1): [0, 0, 0, 0, 0, 0], ("p/1", 0): [1, 1, 1, 1, 1, 0],
              ("p/1", 1): [1, 0, 0, 1, 1, 1]}
    records = [results_record(task, "power", index, accepted, steps) for (task, index), accepted in chains.items()]
    records += [results_record(task, "base", index) for task in ("p/0", "p/1") for index in (0, 1)]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out = diagnose(capsys, path)
    assert code == 0
    assert out.startswith(f"== {path} (`mcmc-llm run` results: 8 records, 2 methods, 2 problems")
    power, base = out.split("-- method ")[1:]
    pooled = np.array(list(chains.values()), dtype=float)
    assert power.startswith(f"power (kind power, 4 records): 2 problems; acceptance {pooled.mean():.3f} over 24 moves; "
                            "by stage " + " ".join(f"{k}:{pooled[:, 2 * k:2 * k + 2].mean():.2f}" for k in range(3)))
    assert "ESS / R-hat: not available" in power
    for task in ("p/0", "p/1"):
        rows = np.array([chains[(task, 0)], chains[(task, 1)]], dtype=float)
        (row,) = [line.split() for line in power.splitlines() if line.split()[:1] == [task]]
        assert row[1:4] == ["2", "6", f"{rows.mean():.3f}"]
    assert "chain 1 accepted none of its 6 moves" in [line for line in power.splitlines() if "p/0" in line][0]
    assert base.startswith("base (kind base, 4 records): no per-step data")
    assert f"plots written: {path}.power.acceptance.png" in power
    assert Path(f"{path}.power.acceptance.png").read_bytes()[:8] == PNG_MAGIC
    assert not Path(f"{path}.base.acceptance.png").exists()
    assert out.rstrip().endswith("WARNING: some chains were flagged (see above)")


def test_diagnose_reads_a_real_run_of_the_evaluation_runner(tmp_path, capsys):
    from mcmc_llm.evaluation import load_config, run_experiment
    from tests.evaluation.test_evaluation_support import write_config

    methods = '\n[[methods]]\nname = "base"\nkind = "base"\n\n[[methods]]\nname = "power"\nkind = "power"\n' \
              'alpha = 4.0\nblock_size = 4\nmcmc_steps = 2\n'
    report = run_experiment(load_config(write_config(tmp_path, problems=2, samples=2, methods=methods)), progress=False)
    code, out = diagnose(capsys, tmp_path, "--no-plots")  # the folder: no trace in it, one results file
    assert code == 0 and out.startswith(f"== {report.path} (`mcmc-llm run` results: 8 records, 2 methods, 2 problems")
    power = [r for r in report.records if r["method"] == "power"]
    rate = np.mean([a for r in power for a in r["diagnostics"]["step_accepted"]])
    assert f"-- method power (kind power, 4 records): 2 problems; acceptance {rate:.3f} over 16 moves" in out
    assert "-- method base (kind base, 4 records): no per-step data" in out
    # the records list each chain's log p and length after every step: R-hat / ESS per problem, last stage
    assert "R-hat / bulk ESS per problem on --stages last" in out
    for task in sorted({r["task_id"] for r in power}):
        chains = sorted((r for r in power if r["task_id"] == task), key=lambda r: r["sample_index"])
        last = np.array(chains[0]["diagnostics"]["step_stage"]) == max(chains[0]["diagnostics"]["step_stage"])
        log_p = np.array([np.array(r["diagnostics"]["step_log_p"])[last] for r in chains])
        assert log_p.shape == (2, 2)
        (row,) = [line for line in out.splitlines() if line.split()[:1] == [task]]
        expected = arviz_adapter.rhat(log_p)
        assert (f"{expected:.3f} / " in row) or (np.isnan(expected) and "nan / " in row)


def test_diagnose_names_a_jsonl_that_is_neither(tmp_path, capsys):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(SystemExit) as stopped:
        main(["diagnose", str(path)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "no saved trace found" in err and "not a `mcmc-llm run` results file" in err and "Traceback" not in err


# --- grade: per method -----------------------------------------------------------------------------------

def test_grade_summarises_each_method_with_one_stated_denominator(tmp_path, capsys):
    """greedy: 1 sample per problem, both right; power: 2 samples per problem, 2 of 2 right on problem 0 and 0
    of 2 on problem 1.  Pooled, the methods are mixed; by_method keeps them apart."""
    rows = [("greedy", 0, 0, 6), ("greedy", 1, 0, 11), ("power", 0, 0, 6), ("power", 0, 1, 6), ("power", 1, 0, 99),
            ("power", 1, 1, 12)]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps({"task_id": f"arithmetic/d1/s0/{task}", "method": method, "sample_index": index,
                                        "completion": f"\\boxed{{{answer}}}"}) + "\n"
                            for method, task, index, answer in rows))
    assert main(["grade", "--task", "arithmetic", "--option", "difficulty=1", "--input", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert summary["accuracy_denominator"].startswith("problems: mean over task ids of passed / graded")
    assert summary["by_method"] == {
        "greedy": {"problems": 2, "graded": 2, "passed": 2, "accuracy": 1.0, "pass@k": {"1": 1.0}},
        "power": {"problems": 2, "graded": 4, "passed": 2, "accuracy": 0.5, "pass@k": {"1": 0.5}},
    }
    assert summary["graded"] == 6 and summary["passed"] == 4
    assert summary["accuracy"] == pytest.approx((3 / 3 + 1 / 3) / 2)  # pooled over methods: problem 0 3/3, 1 1/3
