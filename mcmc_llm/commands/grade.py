"""`mcmc-llm grade`: grade model completions for a task; one JSON line per record, then a summary.

Input: JSONL records `{"task_id": ..., "completion": ...}` (`output` is accepted for `completion`).
Output (stdout): for each record, in input order,
    {"task_id": ..., "passed": bool, "status": ..., "detail": ..., "extracted": ...}
then one summary line
    {"summary": {"task": ..., "records": N, "passed": K, "accuracy": K/N, "statuses": {...}, "pass@k": {...}}}
A record whose task_id is not in the task's data gets status "error" with a detail.  HumanEval code
runs only in `mcmc_llm.sandbox` (in parallel with --workers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

NAME = "grade"
HELP = "Grade completions (JSONL of {task_id, completion}) for a task: one JSON line per record, then a summary line."


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"task options look like KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed: object = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip().replace("-", "_"), parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mcmc_llm.tasks.registry import TASKS

    parser.add_argument("--task", required=True, default=argparse.SUPPRESS,
                        help="task name: " + ", ".join(f"{n} ({d})" for n, (_, _, d) in TASKS.items()))
    parser.add_argument("--input", required=True, default=argparse.SUPPRESS, metavar="FILE.jsonl",
                        help="completions, one JSON object per line: {\"task_id\": ..., \"completion\": ...}")
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="the task's local data file (MATH500 JSON/JSONL, GPQA CSV, AlpacaEval JSON, ...)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the seed the problems were loaded with (GPQA choice order, arithmetic problems)")
    parser.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                        help="task constructor option, e.g. --option difficulty=2 (arithmetic), --option timeout_s=5")
    parser.add_argument("--pass-at", type=int, action="append", default=None, metavar="K",
                        help="report mean pass@K over task ids (repeatable; default 1)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="parallel sandbox runs (humaneval)")
    parser.add_argument("--outputs", default=None, metavar="FILE.json",
                        help="alpacaeval: also write alpaca_eval's model-outputs file here")
    parser.add_argument("--generator", default="mcmc_llm", help="alpacaeval: generator (model) name in --outputs")
    parser.add_argument("--annotate", action="store_true",
                        help="alpacaeval: run alpaca_eval's annotator on --outputs (needs alpaca_eval and an API key)")


def _read_input(path: str) -> list[dict]:
    if not os.path.isfile(path):
        raise ValueError(f"input file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                record = {"_error": f"line {number}: not valid JSON ({error.msg})"}
            if not isinstance(record, dict):
                record = {"_error": f"line {number}: not a JSON object"}
            records.append(record)
    return records


def _grade_one(task, problems: dict, record: dict) -> dict:
    from mcmc_llm.tasks.base import GradeResult

    task_id = record.get("task_id")
    completion = record.get("completion", record.get("output"))
    if "_error" in record:
        result = GradeResult(False, "error", record["_error"])
    elif task_id is None or not isinstance(completion, str):
        result = GradeResult(False, "error", "record needs 'task_id' and a string 'completion'")
    else:
        problem = problems.get(str(task_id))
        finder = getattr(task, "problem_from_id", None)
        if problem is None and finder is not None:
            problem = finder(str(task_id))
        if problem is None:
            result = GradeResult(False, "error", f"unknown task_id {task_id!r} for task {task.name!r}")
        else:
            try:
                result = task.grade(problem, completion)
            except Exception as error:  # one bad record must not stop the run
                result = GradeResult(False, "error", f"grader failed: {error!r}")
    return {"task_id": task_id, **result.to_dict()}


def run(args: argparse.Namespace) -> int:
    from mcmc_llm.tasks import get_task
    from mcmc_llm.tasks.base import mean_pass_at_k

    task = get_task(args.task, **dict(args.option))
    records = _read_input(args.input)
    try:
        problems = {p.task_id: p for p in task.load(path=args.data, seed=args.seed)}
    except ValueError:
        if getattr(task, "problem_from_id", None) is None:
            raise
        problems = {}
    if task.name == "humaneval" and args.workers > 1:
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(lambda r: _grade_one(task, problems, r), records))
    else:
        results = [_grade_one(task, problems, r) for r in records]
    for line in results:
        print(json.dumps(line, ensure_ascii=False), flush=True)

    summary: dict = {"task": task.name, "records": len(results), "passed": sum(r["passed"] for r in results),
                     "statuses": dict(Counter(r["status"] for r in results))}
    summary["accuracy"] = summary["passed"] / len(results) if results else None
    by_id: dict = defaultdict(list)
    for r in results:
        if r["status"] not in ("error", "not_graded") or r["passed"]:
            by_id[str(r["task_id"])].append(bool(r["passed"]))
    pass_at = {}
    for k in args.pass_at or [1]:
        try:
            pass_at[str(k)] = mean_pass_at_k(by_id, k) if by_id else None
        except ValueError as error:
            pass_at[str(k)] = f"n/a: {error}"
    summary["pass@k"] = pass_at
    if task.name == "alpacaeval":
        summary["note"] = _alpaca_outputs(args, task, problems, records)
    print(json.dumps({"summary": summary}, ensure_ascii=False), flush=True)
    return 0


def _alpaca_outputs(args, task, problems: dict, records: list[dict]) -> str:
    from mcmc_llm.tasks.alpacaeval import HOW_TO_ANNOTATE, annotator_configured, run_annotator, write_alpaca_eval_outputs

    if not args.outputs:
        return HOW_TO_ANNOTATE
    rows = []
    for record in records:
        problem = problems.get(str(record.get("task_id")))
        completion = record.get("completion", record.get("output"))
        if problem is not None and isinstance(completion, str):
            rows.append({"instruction": problem.reference["instruction"], "output": completion,
                         "dataset": problem.reference.get("dataset")})
    path = write_alpaca_eval_outputs(rows, args.outputs, args.generator)
    if not args.annotate:
        return f"wrote {len(rows)} outputs to {path}; " + HOW_TO_ANNOTATE
    ready, reason = annotator_configured()
    if not ready:
        print(f"mcmc-llm grade: annotator not configured: {reason}", file=sys.stderr)
        return f"wrote {len(rows)} outputs to {path}; annotator not run ({reason}); " + HOW_TO_ANNOTATE
    leaderboard = run_annotator(path)
    return f"wrote {len(rows)} outputs to {path}; alpaca_eval leaderboard:\n{leaderboard}"
