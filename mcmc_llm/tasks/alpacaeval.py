"""AlpacaEval 2.0: 805 open-ended instructions, judged pairwise by an LLM annotator (Dubois et al. 2024).

Data: a local JSON list or JSONL with `instruction` (and optional `dataset`, `id`), e.g. the
`alpaca_eval.json` file of `tatsu-lab/alpaca_eval`.  Order: file order.  Prompt: the instruction
verbatim.

There is no per-answer ground truth: the metric (length-controlled win rate against a reference model)
is computed over the whole set by `alpaca_eval`'s annotator, which calls a paid LLM API.  So:

* `AlpacaEvalTask.grade` always returns status "not_graded" (with instructions in `detail`);
* `write_alpaca_eval_outputs(records, path, generator_name)` writes the outputs file alpaca_eval reads
  (a JSON list of {"instruction", "output", "generator", "dataset"});
* `run_annotator(outputs_path, ...)` runs `alpaca_eval.evaluate` on that file, but only when the user
  configured an annotator: `alpaca_eval` importable AND an annotator API key in the environment
  (OPENAI_API_KEY by default; ANTHROPIC_API_KEY for Claude configs).  Otherwise it raises ValueError
  saying how to run it by hand:

      pip install alpaca-eval
      export OPENAI_API_KEY=...
      alpaca_eval --model_outputs outputs.json --annotators_config weighted_alpaca_eval_gpt4_turbo
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from mcmc_llm.tasks.base import GradeResult, Problem, read_records, take_subset

__all__ = ["AlpacaEvalTask", "write_alpaca_eval_outputs", "run_annotator", "annotator_configured",
           "DEFAULT_ANNOTATOR", "HOW_TO_ANNOTATE"]

DEFAULT_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
ANNOTATOR_ENV = "MCMC_LLM_ALPACA_EVAL_ANNOTATOR"
HOW_TO_ANNOTATE = (
    "AlpacaEval is judged over the whole set by an LLM annotator: write the outputs with "
    "write_alpaca_eval_outputs(...) (or `mcmc-llm grade --task alpacaeval --outputs FILE.json`), then run "
    "`pip install alpaca-eval; export OPENAI_API_KEY=...; alpaca_eval --model_outputs FILE.json "
    f"--annotators_config {DEFAULT_ANNOTATOR}` (or run_annotator(FILE.json))"
)


def write_alpaca_eval_outputs(records: Iterable[Mapping[str, Any]], path: str | os.PathLike, generator_name: str) -> Path:
    """Write `records` (each with `instruction` and `output` — or `completion` — and optional `dataset`)
    as alpaca_eval's model-outputs JSON list; returns the path."""
    if not generator_name or not str(generator_name).strip():
        raise ValueError("generator_name must be a non-empty string (it names the model on the leaderboard)")
    rows = []
    for index, record in enumerate(records):
        instruction = record.get("instruction")
        output = record.get("output", record.get("completion"))
        if not isinstance(instruction, str) or not isinstance(output, str):
            raise ValueError(f"record {index} needs string 'instruction' and 'output' (or 'completion') fields")
        rows.append({"instruction": instruction, "output": output, "generator": str(generator_name),
                     "dataset": str(record.get("dataset") or "alpaca_eval")})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def annotator_configured(annotators_config: str | None = None) -> tuple[bool, str]:
    """(ready?, reason): alpaca_eval importable and the annotator's API key set."""
    config = annotators_config or os.environ.get(ANNOTATOR_ENV) or DEFAULT_ANNOTATOR
    if importlib.util.find_spec("alpaca_eval") is None:
        return False, "the `alpaca_eval` package is not installed (pip install alpaca-eval)"
    key = "ANTHROPIC_API_KEY" if "claude" in config.lower() else "OPENAI_API_KEY"
    if not os.environ.get(key):
        return False, f"{key} is not set (needed by the {config!r} annotator)"
    return True, config


def run_annotator(outputs_path: str | os.PathLike, annotators_config: str | None = None,
                  output_dir: str | os.PathLike | None = None) -> Any:
    """Run alpaca_eval's annotator on an outputs file; returns alpaca_eval's leaderboard DataFrame.

    Raises ValueError (with HOW_TO_ANNOTATE) when no annotator is configured."""
    ready, reason = annotator_configured(annotators_config)
    if not ready:
        raise ValueError(f"cannot run the AlpacaEval annotator: {reason}. {HOW_TO_ANNOTATE}")
    from alpaca_eval import evaluate

    leaderboard, _ = evaluate(
        model_outputs=str(outputs_path), annotators_config=reason,
        output_path=str(output_dir or Path(outputs_path).parent), is_return_instead_of_print=True,
    )
    return leaderboard


class AlpacaEvalTask:
    """AlpacaEval 2.0 instructions; per-answer grading is "not_graded" (see run_annotator)."""

    name = "alpacaeval"

    def load(self, *, path: str | None = None, subset: int | None = None, seed: int = 0) -> list[Problem]:
        if path is None:
            raise ValueError(
                "alpacaeval needs a local JSON/JSONL file of instructions (field 'instruction', optional "
                "'dataset'), e.g. alpaca_eval.json from the tatsu-lab/alpaca_eval dataset"
            )
        problems = []
        for index, record in enumerate(read_records(path)):
            instruction = record.get("instruction")
            if not isinstance(instruction, str):
                raise ValueError(f"AlpacaEval record {index} needs a string 'instruction'")
            reference = {"instruction": instruction, "dataset": str(record.get("dataset") or "alpaca_eval")}
            problems.append(Problem(str(record.get("id", f"alpacaeval/{index}")), instruction, reference))
        return take_subset(problems, subset)

    def grade(self, problem: Problem, completion: str) -> GradeResult:
        return GradeResult(False, "not_graded", HOW_TO_ANNOTATE)
