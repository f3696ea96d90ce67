"""Per-problem seeding (`[sampling] seeding = "per_problem"`): every problem's records come from
its own seed, so the number of problems per call — fixed, or "auto" from a row budget — changes
nothing in them but `compute`, which is the call's cost shared evenly over its samples (the
tokens each method sampled in all are the same); methods that take one seed per call run one
problem per call."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mcmc_llm.evaluation import ConfigError, load_config, record_content, run_experiment, unit_seed
from mcmc_llm.evaluation.results import record_key
from mcmc_llm.evaluation.runner import plan_units, problems_per_call
from tests.evaluation.test_evaluation_support import METHODS, write_config

SMC = """
[[methods]]
name = "smc"
kind = "smc"
alpha = 4.0
particles = 2
"""


def contents(records) -> dict:
    return {record_key(r): record_content(r) for r in records}


def draws(records) -> dict:
    """Each record without its timing and its share of the call's cost."""
    return {key: {k: v for k, v in content.items() if k != "compute"} for key, content in contents(records).items()}


def tokens_sampled(records) -> dict:
    totals = {}
    for r in records:
        totals[r["method"]] = totals.get(r["method"], 0) + r["compute"]["tokens_sampled"]
    return {method: round(total, 6) for method, total in totals.items()}


def per_problem(directory, problems_per_call, extra="", **options):
    directory.mkdir(exist_ok=True)
    return load_config(write_config(directory, problems=5, samples=3, batch_size=2, problems_per_call=problems_per_call,
                                    methods=METHODS + SMC, sampling_extra='seeding = "per_problem"\n' + extra, **options))


def test_the_grouping_of_problems_changes_no_record(tmp_path):
    runs = [run_experiment(per_problem(tmp_path / "one", 1), progress=False),
            run_experiment(per_problem(tmp_path / "three", 3), progress=False),
            run_experiment(per_problem(tmp_path / "auto", "auto", "max_rows = 8"), progress=False)]
    reference = draws(runs[0].records)
    assert len(reference) == 5 * (3 + 3 + 1 + 3 + 3 + 3 + 3)
    for run in runs[1:]:
        assert draws(run.records) == reference  # tokens, log p, grades, seeds and fingerprints
        assert tokens_sampled(run.records) == tokens_sampled(runs[0].records)
    for record in runs[0].records:
        first = record["group"][0]
        assert record["seed"] == unit_seed(7, record["task_id"], record["method"], first)


def test_per_call_seeding_is_what_the_grouping_changes(tmp_path):
    runs = []
    for per_call in (1, 3):
        directory = tmp_path / str(per_call)
        directory.mkdir()
        config = load_config(write_config(directory, problems=3, batch_size=2, problems_per_call=per_call))
        runs.append({record_key(r): r["tokens"] for r in run_experiment(config, progress=False).records
                     if r["method"] == "power"})
    assert runs[0] != runs[1]


def test_a_run_resumes_under_another_grouping(tmp_path):
    whole = run_experiment(per_problem(tmp_path / "whole", 1), progress=False)
    partial = tmp_path / "partial.jsonl"
    kept = [r for r in whole.records if not (r["method"] in ("power", "vote") and r["task_id"].endswith("3"))]
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept))
    config = per_problem(tmp_path / "auto", "auto", "max_rows = 16")
    resumed = run_experiment(dataclasses.replace(config, output=dataclasses.replace(config.output, path=partial)),
                             progress=False)
    assert resumed.generated == len(whole.records) - len(kept) > 0
    assert draws(resumed.records) == draws(whole.records)


def test_auto_fills_the_row_budget_by_each_method_s_rows(tmp_path):
    config = per_problem(tmp_path, "auto", "max_rows = 12")
    # batch_size 2: ancestral methods 1 row per sample, power 2 (its state and a proposal), vote n = 3
    sizes = {entry.name: problems_per_call(config, entry.name, 12) for entry in config.methods}
    assert sizes == {"base": 6, "cold": 6, "greedy": 6, "power": 3, "bon": 2, "vote": 2, "smc": 1}
    from mcmc_llm.evaluation.executor import task_of
    from mcmc_llm.evaluation.runner import load_problems

    problems = load_problems(task_of(config), config)
    units = plan_units(config, problems, set(), max_rows=12)
    for unit in units:
        assert len(unit.problems) <= sizes[unit.method]
        assert unit.seeds == tuple(unit_seed(7, p.task_id, unit.method, unit.sample_indices[0]) for p in unit.problems)
    assert {len(u.problems) for u in units if u.method == "smc"} == {1}


@pytest.mark.parametrize("sampling, message", [
    ('problems_per_call = "auto"', "needs sampling.seeding"),
    ("max_rows = 8", "max_rows is the row budget"),
    ('seeding = "per_row"', "per_call, per_problem"),
    ('problems_per_call = "many"', "or \"auto\""),
])
def test_bad_seeding_settings_are_refused_by_name(tmp_path, sampling, message):
    text = write_config(tmp_path).read_text().replace("problems_per_call = 1\n", sampling + "\n")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_per_problem_fingerprints_leave_out_the_grouping_and_per_call_ones_keep_it(tmp_path):
    a, b = per_problem(tmp_path / "a", 1), per_problem(tmp_path / "b", 4)
    assert a.fingerprint("power") == b.fingerprint("power")
    for name in "cd":
        (tmp_path / name).mkdir()
    c = load_config(write_config(tmp_path / "c", problems_per_call=1))
    d = load_config(write_config(tmp_path / "d", problems_per_call=4))
    assert c.fingerprint("power") != d.fingerprint("power") != a.fingerprint("power")
