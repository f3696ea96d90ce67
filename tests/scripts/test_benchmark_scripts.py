"""The benchmark scripts run end to end on a tiny random-weight model and print their JSON line
(they are what docs/performance.md's figures come from; the figures themselves are not tested), and
the conventions every experiment script shares (`mcmc_llm.scripts`): the CLI's thread policy, a
quick run's output outside the repository, one line and exit status 130 on Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mcmc_llm.scripts import EXIT_INTERRUPTED, keeping, script_main

ROOT = Path(__file__).resolve().parents[2]


def script_environment(**variables: str) -> dict:
    """The test's environment without the thread variables, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return dict(env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **variables)


def run_script(*arguments: str, env: dict | None = None) -> dict:
    env = script_environment(OMP_NUM_THREADS="1") if env is None else env
    done = subprocess.run([sys.executable, *arguments], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


TINY_TOY_MIXING = ("experiments/toy_mixing.py", "--chains", "20", "--steps", "0", "--seeds", "1")


def test_decode_benchmark_times_both_engines_and_packed_layers_against_the_bandwidth_limit():
    from mcmc_llm.lm.hf import packed_linear

    result = run_script("experiments/bench_decode.py", "--model", "random:llama-tiny", "--batches", "1", "3",
                        "--steps", "2", "--rounds", "1", "--warmup", "1")
    assert set(result["batches"]) == {"1", "3"}
    packed = packed_linear.supported()  # a float32 CPU model packs its linear layers by default
    assert (result["packed_layers"] > 0) == packed
    for row in result["batches"].values():
        assert row["limit_ms"] > 0
        for variant in ("static", "dynamic") + (("static_unpacked",) if packed else ()):
            assert row[variant]["ms_per_step"] > 0 and row[variant]["times_limit"] > 0
        assert row["static_over_dynamic_time"] == round(row["static"]["ms_per_step"] / row["dynamic"]["ms_per_step"], 3)
        if packed:
            assert row["packed_over_unpacked_time"] == round(row["static"]["ms_per_step"] / row["static_unpacked"]["ms_per_step"], 3)


def test_throughput_benchmark_compares_engines_and_projects_math500():
    result = run_script("experiments/bench_throughput.py", "--model", "random:llama-tiny", "--prompt", "5 6 7",
                        "--max-new-tokens", "8", "--block-size", "4", "--mcmc-steps", "1", "--chains", "2",
                        "--reference-samples", "1", "--sampler-repeats", "1", "--compare-engine", "--no-compare")
    assert result["engine"] == "static"
    assert result["dynamic_engine_sampler_vs_generate"] > 0 and result["sampler_vs_generate"] > 0
    assert len(result["occupancy_per_run"]) == 1 and 0 < result["occupancy_per_run"][0] <= 1
    projection = result["math500_projection"]
    # T = 3072, B = 192, N = 10, uniform cuts at the cap: 3072 + 10 * sum_k (192 k + 1) / 2 over 16 stages
    assert projection["tokens_per_sample"] == round(3072 + 10 * sum((192 * k + 1) / 2 for k in range(1, 17)))
    assert projection["hours"] > 0
    early = result["early_reject"]  # (b0): the same seeds with early rejection off, side by side
    assert early["runs_with_identical_chains"] == "1/1" and early["tokens_per_sample_on"] <= early["tokens_per_sample_off"]
    assert early["wall_per_sample_on"] > 0 and early["wall_per_sample_off"] > 0


def test_quick_run_writes_outside_the_repository_on_one_thread_by_default():
    result = run_script(*TINY_TOY_MIXING, "--quick", env=script_environment())  # no OMP_NUM_THREADS, no --threads
    out = Path(result["results"])
    try:
        assert ROOT not in out.resolve().parents and out.is_file()
        assert len(out.read_text().splitlines()) == len(result["tv_power_at_max_steps"])  # one row per kernel
        assert result["threads"] == 1
    finally:
        shutil.rmtree(out.parent)


def test_threads_flag_overrides_the_environment_and_out_is_used(tmp_path):
    out = tmp_path / "mixing.jsonl"
    result = run_script(*TINY_TOY_MIXING, "--quick", "--threads", "2", "--out", str(out))
    assert result["threads"] == 2 and result["results"] == str(out) and out.is_file()


def test_ctrl_c_ends_a_script_with_one_line_naming_the_partial_results(tmp_path):
    out = tmp_path / "mixing.jsonl"
    command = [sys.executable, "experiments/toy_mixing.py", "--chains", "200", "--steps", "64", "--seeds", "1000",
               "--out", str(out)]
    # SIGINT at its default in the child: a shell that runs the suite in the background (`cmd &`
    # without job control) starts it ignored, and Python then installs no KeyboardInterrupt handler
    process = subprocess.Popen(command, cwd=ROOT, env=script_environment(OMP_NUM_THREADS="1"), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = iter(process.stdout.readline, "")
        assert next(lines) == f"results: {out}\n"
        for line in lines:  # the model line, the column header, then one line per finished run
            if line.split()[:1] == ["uniform"]:
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED
    assert stderr.strip().splitlines() == [
        f"toy_mixing.py: interrupted (Ctrl-C); partial results kept in {out}; rerun with --out {out} to resume"]
    assert json.loads(out.read_text().splitlines()[0])["kernel"] == "uniform"


def test_script_main_exits_130_with_one_line_and_the_detail_of_keeping(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["experiments/example.py"])

    def interrupted():
        with keeping("results.jsonl"):
            raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        script_main(interrupted)
    assert stopped.value.code == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "example.py: interrupted (Ctrl-C); partial results kept in results.jsonl\n"
