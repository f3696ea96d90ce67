"""The benchmark scripts run end to end on a tiny random-weight model and print their JSON line
(they are what docs/performance.md's figures come from; the figures themselves are not tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*arguments: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, *arguments], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_decode_benchmark_times_both_engines_and_packed_layers_against_the_bandwidth_limit():
    from mcmc_llm.lm import packed_linear

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
