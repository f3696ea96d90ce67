"""`mcmc-llm run CONFIG.toml`: run or resume an evaluation experiment and print its summary."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

NAME = "run"
HELP = "Run (or resume) an evaluation experiment from a TOML config; print accuracy and pass@k per method."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="experiment config (TOML; keys in docs/evaluation.md)")
    parser.add_argument("--output", type=Path, default=None, help="results JSONL (overrides [output] path)")
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (overrides [scaleout] workers)")
    parser.add_argument("--summary-only", action="store_true", help="generate nothing: summarise the existing results file")
    parser.add_argument("--smoke", action="store_true",
                        help="smoke test: 2 problems, 24 tokens, <= 2 samples and MH steps per method, power blocks of 8; "
                             "results go to <output>.smoke.jsonl unless --output is given")
    parser.add_argument("--model", default=None, help="model spec (overrides [model] spec; e.g. a tiny local model for --smoke)")
    parser.add_argument("--device", default=None, help="overrides [model] device")
    parser.add_argument("--dtype", default=None, help="overrides [model] dtype")
    parser.add_argument("--task-path", default=None, help="overrides [task] path (a local data file)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from mcmc_llm.evaluation import format_summary, parse_config, read_document, read_records, run_experiment, smoke_document, summarize
    from mcmc_llm.evaluation.results import record_key
    from mcmc_llm.evaluation.scaleout import RayUnavailable

    document = read_document(args.config)
    for section, key, value in (("model", "spec", args.model), ("model", "device", args.device),
                                ("model", "dtype", args.dtype), ("task", "path", args.task_path)):
        if value is not None:
            document.setdefault(section, {})[key] = value
    if args.smoke:
        document = smoke_document(document)
        output = document.get("output", {}).get("path")
        if isinstance(output, str) and args.output is None:
            document["output"]["path"] = str(Path(output).with_suffix(".smoke.jsonl"))
    config = parse_config(document, str(args.config))
    if args.output is not None:
        config = dataclasses.replace(config, output=dataclasses.replace(config.output, path=args.output))
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be a positive integer, got {args.workers}")
        config = dataclasses.replace(config, scaleout=dataclasses.replace(config.scaleout, workers=args.workers))
    if args.summary_only:
        names = [m.name for m in config.methods]
        records = [r for r in read_records(config.output.path) if record_key(r)[1] in names]
        print(format_summary(summarize(records, names)))
        return 0
    try:
        report = run_experiment(config, progress=not args.no_progress)
    except RayUnavailable as error:
        print(f"mcmc-llm run: error: {error}", file=sys.stderr)
        return 2
    print(f"{report.path}: {report.generated} new records, {report.skipped} already there, "
          f"{report.wall_time_s:.1f}s")
    print(report.table())
    return 0
