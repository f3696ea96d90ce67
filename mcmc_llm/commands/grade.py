"""`mcmc-llm grade`: grade model completions for a task; one JSON line per record, then a summary.

Input: JSONL records `{"task_id": ..., "completion": ...}` (`output` is accepted for `completion`).
Output (stdout): for each record, in input order,
    {"task_id": ..., "passed": bool, "status": ..., "detail": ..., "extracted": ...}
then one summary line
    {"summary": {"task": ..., "records": N, "graded": G, "passed": K, "skipped": S, "skipped_reasons": {...},
                 "statuses": {...}, "accuracy": ..., "pass@k": {...},
                 "accuracy_denominator": "...", "by_method": {METHOD: {"problems": P, "graded": G_m,
                 "passed": K_m, "accuracy": ..., "pass@k": {...}}, ...}}}
`accuracy` is the mean over problems (task ids) of passed / graded samples of that problem (pass@1,
as in `mcmc-llm run`): its denominator is the number of problems, each weighing 1 whatever its number
of samples; it equals K / G when every problem has the same number of graded samples.  When the
records name a `method` (the results of `mcmc-llm run`), `by_method` gives the same numbers for each
method alone (records without one are method "-"); the top-level numbers pool every method.
A record that cannot be graded (a truncated or non-JSON line, a missing or wrongly typed field, a
task_id not in the task's data) gets status "error" with a detail naming its line, is left out of
the summary (G = N - S - not_graded, the one denominator of accuracy and pass@k), and makes the
command exit 1 after printing everything, with one line on stderr counting them.  A grader that
raises on a record is that record's "error" ("grader failed: ...", counted in `skipped_reasons`);
the other records are graded and the command exits 0.
HumanEval code runs only in `mcmc_llm.sandbox` (in parallel with --workers).
`--grader authors` (gpqa, humaneval) grades with the reference code's graders instead of the task's
own (`mcmc_llm.tasks.authors_graders`); the summary then says `"grader": "authors"` and how power
records were decoded (`grader_note`).  `--tokenizer` (the model's tokenizer, hub id or directory)
decodes the stored ids as the reference did.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
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
    parser.add_argument("--grader", choices=("ours", "authors"), default="ours",
                        help="ours: the task's own grader; authors: the reference code's grader (gpqa, humaneval; "
                             "docs/tasks.md)")
    parser.add_argument("--tokenizer", default=None, metavar="NAME_OR_PATH",
                        help="--grader authors: the model's tokenizer (hub id or local directory), to decode the stored "
                             "token ids as the reference code did (power records: prompt + generation)")


def _read_input(path: str) -> list[dict]:
    if not os.path.exists(path):
        raise ValueError(f"--input {path}: file not found")
    if not os.path.isfile(path):
        raise ValueError(f"--input {path}: not a regular file")
    records = []
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        cut = number == len(lines)  # no newline after it: possibly a truncated line
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            record = {"_error": f"line {number}: not UTF-8 text", "_reason": "not UTF-8"}
        except json.JSONDecodeError as error:
            reason = "truncated line" if cut else "not valid JSON"
            record = {"_error": f"line {number}: {reason} ({error.msg})", "_reason": reason}
        if not isinstance(record, dict):
            record = {"_error": f"line {number}: not a JSON object", "_reason": "not a JSON object"}
        record.setdefault("_line", number)
        records.append(record)
    return records


def _malformed(record: dict) -> tuple[str, str] | None:
    """(reason, detail) if the record cannot be graded as written, else None."""
    if "_error" in record:
        return record["_reason"], record["_error"]
    line = f"line {record['_line']}: "
    completion = record.get("completion", record.get("output"))
    if "task_id" not in record or record["task_id"] is None:
        return "missing task_id", line + "record needs a 'task_id'"
    if not isinstance(record["task_id"], (str, int)) or isinstance(record["task_id"], bool):
        return "task_id of the wrong type", line + f"'task_id' must be a string or an integer, got {record['task_id']!r}"
    if completion is None:
        return "missing completion", line + "record needs a string 'completion' (or 'output')"
    if not isinstance(completion, str):
        return "completion not a string", line + f"'completion' must be a string, got {type(completion).__name__}"
    return None


def _grade_one(task, problems: dict, record: dict, grade=None) -> dict:
    """The output line of one record; `grade(problem, record, completion)` grades it (default: the task's grader)."""
    from mcmc_llm.tasks.base import GradeResult

    task_id = record.get("task_id")
    completion = record.get("completion", record.get("output"))
    malformed = _malformed(record)
    reason = None
    if malformed is not None:
        reason, detail = malformed
        result = GradeResult(False, "error", detail)
    else:
        problem = problems.get(str(task_id))
        finder = getattr(task, "problem_from_id", None)
        if problem is None and finder is not None:
            problem = finder(str(task_id))
        if problem is None:
            reason = "unknown task_id"
            result = GradeResult(False, "error", f"line {record['_line']}: unknown task_id {task_id!r} for task {task.name!r}")
        else:
            try:
                result = grade(problem, record, completion) if grade is not None else task.grade(problem, completion)
            except Exception as error:  # one bad record must not stop the run
                reason = "grader failed"
                result = GradeResult(False, "error", f"grader failed: {error!r}")
    return {"task_id": task_id, **result.to_dict(), **({"_reason": reason} if reason else {})}


#: Reasons a record is malformed (the command then exits 1).
INPUT_ERRORS = ("not valid JSON", "truncated line", "not UTF-8", "not a JSON object", "missing task_id",
                "task_id of the wrong type", "missing completion", "completion not a string", "unknown task_id")
#: Statuses left out of the summary, and the reason given for them when no other is known.
UNGRADED = {"error": "grader error", "not_graded": "not graded by this task"}


DENOMINATOR = "problems: mean over task ids of passed / graded samples of that task id (pass@1)"


def _scores(graded: list[dict], ks: list[int] | None) -> dict:
    """accuracy (mean over task ids of the fraction passed) and mean pass@k of graded results."""
    from mcmc_llm.tasks.base import mean_pass_at_k

    by_id: dict = defaultdict(list)
    for r in graded:
        by_id[str(r["task_id"])].append(bool(r["passed"]))
    pass_at = {}
    for k in ks or [1]:
        try:
            pass_at[str(k)] = mean_pass_at_k(by_id, k) if by_id else None
        except ValueError as error:
            pass_at[str(k)] = f"n/a: {error}"
    return {"accuracy": mean_pass_at_k(by_id, 1) if by_id else None, "pass@k": pass_at}


def _check_flags(args: argparse.Namespace) -> None:
    from mcmc_llm.commands.common import check_output_path

    bad = [k for k in args.pass_at or [] if k < 1]
    if bad:
        raise ValueError(f"--pass-at must be a positive integer, got {bad[0]}")
    if args.workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {args.workers}")
    if args.outputs:
        path = check_output_path(args.outputs, "--outputs")
        if path.is_file() and path.stat().st_size and not _is_alpaca_outputs(path):
            raise ValueError(f"--outputs {path} exists and is not an alpaca_eval outputs file written by `grade`; "
                             "refusing to overwrite it (choose another path or remove the file)")


def _is_alpaca_outputs(path) -> bool:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(rows, list) and all(isinstance(r, dict) and "output" in r for r in rows)


def run(args: argparse.Namespace) -> int:
    from mcmc_llm.tasks import get_task

    _check_flags(args)
    task = get_task(args.task, **dict(args.option))
    grade, note = _grader(args, task)
    records = _read_input(args.input)
    if not records:
        raise ValueError(f"--input {args.input} holds no records (expected JSON lines of {{\"task_id\", \"completion\"}})")
    try:
        problems = {p.task_id: p for p in task.load(path=args.data, seed=args.seed)}
    except ValueError:
        if getattr(task, "problem_from_id", None) is None:
            raise
        problems = {}
    if task.name == "humaneval" and args.workers > 1:
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(lambda r: _grade_one(task, problems, r, grade), records))
    else:
        results = [_grade_one(task, problems, r, grade) for r in records]
    reasons = [r.pop("_reason", None) or UNGRADED.get(r["status"]) for r in results]
    skipped = Counter(reason for reason in reasons if reason)
    malformed = Counter(reason for reason in reasons if reason in INPUT_ERRORS)
    for line in results:
        print(json.dumps(line, ensure_ascii=False), flush=True)

    # One denominator: the graded records (the rest are skipped, with their reasons).  accuracy is
    # the mean over task ids of the fraction passed (= pass@1, as in `mcmc-llm run`).
    graded = [r for r in results if r["status"] not in UNGRADED]
    summary: dict = {"task": task.name, "records": len(results), "graded": len(graded),
                     "passed": sum(bool(r["passed"]) for r in graded),
                     "skipped": sum(skipped.values()), "skipped_reasons": dict(skipped),
                     "statuses": dict(Counter(r["status"] for r in results)),
                     **_scores(graded, args.pass_at), "accuracy_denominator": DENOMINATOR,
                     "grader": args.grader, **({"grader_note": note} if note else {})}
    methods = [record.get("method") for record, result in zip(records, results) if result["status"] not in UNGRADED]
    if any(method is not None for method in methods):
        by_method: dict = defaultdict(list)
        for method, result in zip(methods, graded):
            by_method["-" if method is None else str(method)].append(result)
        summary["by_method"] = {
            method: {"problems": len({str(r["task_id"]) for r in rows}), "graded": len(rows),
                     "passed": sum(bool(r["passed"]) for r in rows), **_scores(rows, args.pass_at)}
            for method, rows in by_method.items()}
    if task.name == "alpacaeval":
        summary["note"] = _alpaca_outputs(args, task, problems, records)
    print(json.dumps({"summary": summary}, ensure_ascii=False), flush=True)
    if malformed:
        reasons = ", ".join(f"{count} {reason}" for reason, count in malformed.most_common())
        print(f"mcmc-llm grade: error: {sum(malformed.values())} of {len(results)} records in {args.input} are "
              f"malformed ({reasons}); they are marked \"status\": \"error\" above and left out of the summary",
              file=sys.stderr)
        return 1
    return 0


class _LockedTokenizer:
    """A tokenizer shared by the --workers threads: one call at a time."""

    def __init__(self, tokenizer):
        self._tokenizer, self._lock = tokenizer, threading.Lock()

    def __call__(self, text):
        with self._lock:
            return self._tokenizer(text)

    def decode(self, ids, **options):
        with self._lock:
            return self._tokenizer.decode(ids, **options)


def _load_tokenizer(spec: str):
    try:
        from transformers import AutoTokenizer

        return _LockedTokenizer(AutoTokenizer.from_pretrained(spec))
    except Exception as error:  # missing files, no network, not a tokenizer
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"--tokenizer {spec}: could not load a tokenizer ({reason})") from None


def _grader(args: argparse.Namespace, task):
    """(grade function or None for the task's own grader, note for the summary or None)."""
    from mcmc_llm.tasks.authors_graders import AUTHORS_TIMEOUT_S, check_grader, grade_authors

    check_grader(args.grader, task.name)
    if args.grader == "ours":
        if args.tokenizer is not None:
            raise ValueError("--tokenizer applies to --grader authors only")
        return None, None
    if task.name == "humaneval" and "timeout_s" not in dict(args.option):
        task.timeout_s = AUTHORS_TIMEOUT_S  # the reference harness's limit
    tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer is not None else None
    if tokenizer is not None:
        note = f"stored token ids decoded with the tokenizer {args.tokenizer}; power records: prompt + generation"
    else:
        note = ("no --tokenizer: the completion stands for the generated text; power records: "
                + ("prompt text + completion" if task.name == "humaneval" else "the completion"))
    return (lambda problem, record, completion: grade_authors(task, problem, record, tokenizer)), note


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
