"""The GPU recipe's Table 1 configs (experiments/configs/gpu/) parse, and run end to end through
`mcmc-llm run --smoke` on tiny random models of the same architectures (Qwen2 for the Qwen2.5
configs, Phi-3 for Phi-3.5-mini), saved as local transformers directories with the embedded
SmolLM2 tokenizer (so chat templates and text prompts are real), on local copies of each task's
data format.  What is checked is the pipeline, not accuracy: every (problem, method) gets a graded
record, and power sampling ran its MH steps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mcmc_llm.cli import main as cli_main
from mcmc_llm.evaluation import load_config, read_document, read_records

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiments" / "configs" / "gpu").glob("*.toml"))
PAPER = {"alpha": 4.0, "block_size": 192, "mcmc_steps": 10}


def test_table1_configs_parse_with_the_paper_settings():
    assert len(CONFIGS) == 12  # 3 models x 4 tasks
    for path in CONFIGS:
        config = load_config(path)
        assert config.sampling.max_new_tokens == 3072
        assert [m.name for m in config.methods] == ["base", "low_temp", "power"]
        power = config.method("power").method.config
        assert (power.alpha, power.block_size, power.mcmc_steps, power.cut_rule) == (4.0, 192, 10, "uniform")
        assert config.method("low_temp").method.rule().temperature == pytest.approx(0.25)
        expected_proposal = 0.5 if config.task.name == "alpacaeval" else None
        assert power.proposal_temperature == expected_proposal
        assert config.model.chat_template == ("Phi-3.5" in config.model.spec)


def _tiny_model(directory: Path, architecture: str) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from mcmc_llm.lm.registry import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    sizes = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                 pad_token_id=tokenizer.eos_token_id)
    extra = {"sliding_window": 262144} if architecture == "phi3" else {}  # as Phi-3.5-mini declares
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(architecture, **sizes, **extra))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _task_files(directory: Path) -> dict[str, Path]:
    math = directory / "math500.jsonl"
    math.write_text("".join(json.dumps({"problem": f"What is {a} + {a}?", "answer": str(2 * a), "unique_id": f"m{a}"}) + "\n"
                            for a in (2, 3, 4)))
    gpqa = directory / "gpqa.csv"
    with gpqa.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1",
                                         "Incorrect Answer 2", "Incorrect Answer 3"])
        writer.writeheader()
        for i in range(3):
            writer.writerow({"Record ID": f"g{i}", "Question": f"Which is {i}?", "Correct Answer": str(i),
                             "Incorrect Answer 1": "x", "Incorrect Answer 2": "y", "Incorrect Answer 3": "z"})
    alpaca = directory / "alpaca_eval.json"
    alpaca.write_text(json.dumps([{"instruction": "Say hello.", "dataset": "t"}, {"instruction": "Name a colour.", "dataset": "t"}]))
    return {"math500": math, "gpqa": gpqa, "alpacaeval": alpaca, "humaneval": None}


@pytest.mark.slow
def test_table1_configs_run_end_to_end_on_tiny_random_models(tmp_path, capsys):
    models = {arch: _tiny_model(tmp_path / arch, arch) for arch in ("qwen2", "phi3")}
    data = _task_files(tmp_path)
    for path in CONFIGS:
        document = read_document(path)
        architecture = "phi3" if "Phi-3.5" in document["model"]["spec"] else "qwen2"
        task = document["task"]["name"]
        output = tmp_path / f"{path.stem}.jsonl"
        arguments = ["run", str(path), "--smoke", "--no-progress", "--model", f"hf:{models[architecture]}",
                     "--device", "cpu", "--dtype", "float32", "--output", str(output)]
        if data[task] is not None:
            arguments += ["--task-path", str(data[task])]
        assert cli_main(arguments) == 0, path.name
        records = read_records(output)
        assert {(r["task_id"], r["method"]) for r in records} == {
            (t, m) for t in {r["task_id"] for r in records} for m in ("base", "low_temp", "power")
        }, path.name
        assert len({r["task_id"] for r in records}) == 2, path.name
        for record in records:
            assert isinstance(record["completion"], str) and isinstance(record["passed"], bool)
            assert 0 < record["length"] <= 24
        power = [r for r in records if r["method"] == "power"]
        assert all(r["diagnostics"]["steps"] >= 2 for r in power), path.name
        assert "power" in capsys.readouterr().out
