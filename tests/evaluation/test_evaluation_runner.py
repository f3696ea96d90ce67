"""Runner: records, determinism, resume after a kill (in-process and `kill -9` of the CLI),
truncated last lines, batching groups, settings fingerprints."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcmc_llm.evaluation import ConfigError, load_config, read_records, record_content, run_experiment, unit_seed
from mcmc_llm.evaluation.results import record_key
from tests.evaluation.test_evaluation_support import write_config

ROOT = Path(__file__).resolve().parents[2]


def contents(records) -> dict:
    return {record_key(r): record_content(r) for r in records}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the standard config (4 problems, 6 methods)."""
    directory = tmp_path_factory.mktemp("reference")
    report = run_experiment(load_config(write_config(directory)), progress=False)
    return report


def test_every_key_recorded_once_with_diagnostics(reference):
    records = lines(reference.path)
    keys = [record_key(r) for r in records]
    assert len(keys) == len(set(keys)) == 4 * (4 + 4 + 1 + 4 + 4 + 4) == reference.generated
    for record in records:
        for field in ("completion", "tokens", "passed", "status", "seed", "wall_time_s", "log_p", "length", "fingerprint"):
            assert field in record
        assert set(record["compute"]) >= {"tokens_sampled", "tokens_encoded", "forward_passes", "attention_positions"}
    power = [r for r in records if r["method"] == "power"]
    assert all({"acceptance_rate", "steps", "tokens_resampled"} <= set(r["diagnostics"]) for r in power)
    bon = [r for r in records if r["method"] == "bon"]
    assert all(r["diagnostics"]["n"] == 3 and r["diagnostics"]["budget_tokens"] == 22.0 for r in bon)
    assert {s.method for s in reference.summaries} == {"base", "cold", "greedy", "power", "bon", "vote"}
    assert reference.path.with_name("results.summary.json").exists()


def test_seeds_come_from_keys(reference):
    for record in lines(reference.path):
        assert record["seed"] == unit_seed(7, record["task_id"], record["method"], record["sample_index"])
    greedy = [r for r in lines(reference.path) if r["method"] == "greedy"]
    assert {r["sample_index"] for r in greedy} == {0}


def test_rerun_is_identical_and_a_finished_run_generates_nothing(reference, tmp_path):
    again = run_experiment(load_config(write_config(tmp_path)), progress=False)
    assert contents(again.records) == contents(reference.records)
    finished = run_experiment(load_config(write_config(tmp_path)), progress=False)
    assert finished.generated == 0 and finished.skipped == len(reference.records)
    assert len(lines(again.path)) == len(reference.records)


def test_resume_from_partial_file_with_truncated_last_line(reference, tmp_path):
    path = tmp_path / "results.jsonl"
    raw = reference.path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(raw[:30]) + b"\n" + raw[30][: len(raw[30]) // 2])  # killed mid-write
    assert len(read_records(path)) == 30
    resumed = run_experiment(load_config(write_config(tmp_path)), progress=False)
    assert resumed.generated == len(reference.records) - 30 and resumed.skipped == 30
    assert contents(lines(path)) == contents(reference.records)
    assert len(lines(path)) == len(reference.records)  # complete, no duplicates, every line valid JSON


def test_unreadable_line_in_the_middle_is_an_error(reference, tmp_path):
    path = tmp_path / "results.jsonl"
    raw = reference.path.read_text().splitlines()
    path.write_text("\n".join(raw[:3] + ["{not json"] + raw[3:6]) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:4: not a results record"):
        run_experiment(load_config(write_config(tmp_path)), progress=False)


def test_growing_the_subset_reproduces_the_full_run(reference, tmp_path):
    """Records do not depend on which problems were run before (order/resume independence)."""
    config = load_config(write_config(tmp_path, problems=4))
    small = dataclasses.replace(config, task=dataclasses.replace(config.task, subset=1))
    run_experiment(small, progress=False)
    full = run_experiment(config, progress=False)
    assert contents(full.records) == contents(reference.records)


def test_batched_groups_resume_to_the_same_records(tmp_path):
    config = load_config(write_config(tmp_path, batch_size=3, problems=2, output="a.jsonl"))
    whole = run_experiment(config, progress=False)
    groups = {tuple(r["group"]) for r in whole.records if r["method"] == "power"}
    assert groups == {(0, 1, 2), (3,)}
    partial = tmp_path / "b.jsonl"
    kept = [r for r in lines(whole.path) if not (r["method"] == "power" and r["sample_index"] == 1)]
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept))
    resumed = run_experiment(dataclasses.replace(config, output=dataclasses.replace(config.output, path=partial)), progress=False)
    assert resumed.generated == 2  # problem x sample 1 of power, regenerated within its group
    assert contents(resumed.records) == contents(whole.records)
    (tmp_path / "c").mkdir()
    unbatched = run_experiment(load_config(write_config(tmp_path / "c", batch_size=1, problems=2)), progress=False)
    assert contents(unbatched.records) != contents(whole.records)  # the batch size is part of a record's recipe


def test_problems_per_call_batches_problems_and_resumes_to_the_same_records(tmp_path):
    config = load_config(write_config(tmp_path, batch_size=2, problems=3, problems_per_call=2, output="a.jsonl"))
    whole = run_experiment(config, progress=False)
    assert len(whole.records) == len(contents(whole.records)) and whole.generated == len(whole.records)
    # problems 0 and 1 share each unit's seed (the chunk's first problem); problem 2 is a chunk of its own
    seeds = {}
    for r in whole.records:
        seeds.setdefault((r["method"], r["sample_index"]), {})[r["task_id"]] = r["seed"]
    first, second, third = sorted({r["task_id"] for r in whole.records})
    for by_task in seeds.values():
        assert by_task[first] == by_task[second] != by_task[third]
    partial = tmp_path / "b.jsonl"
    kept = [r for r in lines(whole.path) if not (r["task_id"] == second and r["sample_index"] == 3)]
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept))
    resumed = run_experiment(dataclasses.replace(config, output=dataclasses.replace(config.output, path=partial)), progress=False)
    assert resumed.generated == len(whole.records) - len(kept)
    assert contents(resumed.records) == contents(whole.records)


def test_changed_settings_refuse_to_resume(reference, tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(reference.path.read_bytes())
    changed = write_config(tmp_path).read_text().replace("mcmc_steps = 2", "mcmc_steps = 3")
    (tmp_path / "changed.toml").write_text(changed)
    with pytest.raises(ConfigError, match="methods bon, power: .* holds records made with different settings"):
        run_experiment(load_config(tmp_path / "changed.toml"), progress=False)


def test_kill_dash_nine_of_the_cli_then_rerun(reference, tmp_path):
    config = write_config(tmp_path, grade_delay=0.02)
    path = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "mcmc_llm.cli", "run", str(config), "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 12:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run finished before it could be killed: " + process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = read_records(path)
    assert 12 <= len(written) < len(reference.records)
    rerun = run_experiment(load_config(config), progress=False)  # the CLI's code path, in-process (saves a start-up)
    assert rerun.skipped == len(written) and rerun.generated == len(reference.records) - len(written)
    final = lines(path)
    assert len(final) == len({record_key(r) for r in final}) == len(reference.records)
    # the task options differ (grade_delay), hence the fingerprint; everything else is identical
    strip = lambda records: {k: {f: v for f, v in r.items() if f != "fingerprint"} for k, r in contents(records).items()}  # noqa: E731
    assert strip(final) == strip(reference.records)


def test_summary_only_cli_and_answer_extractors(reference, capsys):
    from mcmc_llm.cli import main
    from mcmc_llm.evaluation.executor import answer_extractor
    from mcmc_llm.tasks import get_task

    config = reference.path.parent / "config.toml"
    assert main(["run", str(config), "--summary-only"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:6] == ["method", "kind", "problems", "samples", "accuracy", "pass@1"]
    assert all(name in table for name in ("base", "cold", "greedy", "power", "bon", "vote"))
    extract = answer_extractor(get_task("arithmetic"))
    assert extract("so 3 + 4 = \\boxed{7}.") == "7" and extract("no idea") is None


def test_transformers_model_records_do_not_depend_on_earlier_units(tmp_path):
    """On a KV-cached transformers backend, a power unit registers its prompt as a reusable prefix;
    the runner clears it before the next unit, so base samples (content and compute counters) are
    the same whether or not power ran before them, even on the same model object."""
    from mcmc_llm.lm.registry import load_model

    lm = load_model("random:llama-tiny", device="cpu")
    both = "\n[[methods]]\nname = \"power\"\nkind = \"power\"\nblock_size = 4\nmcmc_steps = 1\n\n[[methods]]\nname = \"base\"\nkind = \"base\"\n"
    alone = "\n[[methods]]\nname = \"base\"\nkind = \"base\"\n"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = run_experiment(load_config(write_config(tmp_path / "a", methods=both, model="random:llama-tiny", problems=1, samples=2)),
                           lm=lm, progress=False)
    second = run_experiment(load_config(write_config(tmp_path / "b", methods=alone, model="random:llama-tiny", problems=1, samples=2)),
                            lm=lm, progress=False)
    base = {k: v for k, v in contents(first.records).items() if k[1] == "base"}
    assert len(base) == 2 and base == contents(second.records)


def test_a_record_written_twice_is_read_once(tmp_path):
    """Two lines with one key (a unit re-run after a crash between its appends, say): the first is
    kept, with a warning naming the line, so nothing is counted twice in accuracy or pass@k."""
    path = tmp_path / "results.jsonl"
    first = {"task_id": "t1", "method": "base", "sample_index": 0, "passed": True}
    other = {"task_id": "t1", "method": "base", "sample_index": 1, "passed": False}
    again = dict(first, passed=False)
    path.write_text("".join(json.dumps(r) + "\n" for r in (first, other, again)))
    with pytest.warns(UserWarning, match=r"results.jsonl:3: duplicate record \('t1', 'base', 0\); keeping the first"):
        records = read_records(path)
    assert records == [first, other]


def test_prompts_too_long_for_the_context_are_refused_before_any_work(tmp_path):
    """A model with a context limit: prompts that leave less than max_new_tokens of it are named in
    one ConfigError before anything is generated (the results file is not even created)."""
    from mcmc_llm.lm.toy import load_toy

    config = load_config(write_config(tmp_path, max_new_tokens=8))
    lm = load_toy("bigram")
    lm.max_context = 8 + 1  # room for no prompt token at all beyond one
    with pytest.raises(ConfigError, match=r"prompt\(s\) leave less than max_new_tokens = 8 of the model's context \(9 tokens\)"):
        run_experiment(config, lm=lm)
    assert not Path(config.output.path).exists()
    lm.max_context = 10_000
    assert run_experiment(config, lm=lm).generated > 0
