"""AlpacaEval task: instructions from a local file, outputs in alpaca_eval's format, not graded per answer."""

import json

import pytest

from mcmc_llm.tasks import get_task
from mcmc_llm.tasks.alpacaeval import annotator_configured, run_annotator, write_alpaca_eval_outputs


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "alpaca_eval.jsonl"
    rows = [{"instruction": "Write a haiku about the sea.", "dataset": "helpful_base"},
            {"instruction": "What is 2+2?"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_load_and_grade_not_graded(data):
    task = get_task("alpacaeval")
    problems = task.load(path=data)
    assert [p.prompt for p in problems] == ["Write a haiku about the sea.", "What is 2+2?"]
    assert problems[0].reference["dataset"] == "helpful_base" and problems[1].reference["dataset"] == "alpaca_eval"
    result = task.grade(problems[0], "Waves...")
    assert result.status == "not_graded" and not result.passed and "alpaca_eval --model_outputs" in result.detail
    with pytest.raises(ValueError, match="instruction"):
        task.load()


def test_write_outputs_format(tmp_path):
    path = write_alpaca_eval_outputs(
        [{"instruction": "Say hi", "output": "hi", "dataset": "oasst"}, {"instruction": "Q", "completion": "A"}],
        tmp_path / "out" / "outputs.json", "smollm2-power")
    rows = json.loads(path.read_text())
    assert rows == [
        {"instruction": "Say hi", "output": "hi", "generator": "smollm2-power", "dataset": "oasst"},
        {"instruction": "Q", "output": "A", "generator": "smollm2-power", "dataset": "alpaca_eval"},
    ]
    with pytest.raises(ValueError, match="generator_name"):
        write_alpaca_eval_outputs([], tmp_path / "x.json", "")
    with pytest.raises(ValueError, match="record 0"):
        write_alpaca_eval_outputs([{"instruction": "Q"}], tmp_path / "x.json", "g")


def test_annotator_not_run_without_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ready, reason = annotator_configured()
    assert not ready and ("alpaca_eval" in reason or "OPENAI_API_KEY" in reason)
    with pytest.raises(ValueError, match="cannot run the AlpacaEval annotator"):
        run_annotator(tmp_path / "outputs.json")
