"""`mcmc-llm run CONFIG.toml`: run or resume an evaluation experiment and print its summary.

Before any model is loaded: the config is validated, the device name checked, the results path
and its summary file checked for writing, and an existing results file read: it must be empty or
hold this runner's own records (each with a settings fingerprint), else the run is refused and
the file left untouched.  Records are appended one durable line at a time, so Ctrl-C keeps every
record already written; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from mcmc_llm.commands.common import add_progress_arguments, add_threads_argument, check_output_path, progress_enabled
from mcmc_llm.core.validate import integer

NAME = "run"
HELP = "Run (or resume) an evaluation experiment from a TOML config; print accuracy and pass@k per method."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="experiment config (TOML; keys in docs/evaluation.md)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSONL (overrides [output] path); must be absent, empty or hold this runner's records")
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (overrides [scaleout] workers)")
    parser.add_argument("--summary-only", action="store_true", help="generate nothing: summarise the existing results file")
    parser.add_argument("--smoke", action="store_true",
                        help="smoke test: 2 problems, 24 tokens, <= 2 samples and MH steps per method, power blocks of 8; "
                             "results go to <output>.smoke.jsonl unless --output is given")
    parser.add_argument("--model", default=None, help="model spec (overrides [model] spec; e.g. a tiny local model for --smoke)")
    parser.add_argument("--device", default=None, help="overrides [model] device")
    parser.add_argument("--dtype", default=None, help="overrides [model] dtype")
    add_threads_argument(parser, default_text="[model] threads, else 1 on a CPU")
    parser.add_argument("--task-path", default=None, help="overrides [task] path (a local data file)")
    add_progress_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _checked_config(args: argparse.Namespace):
    from mcmc_llm.evaluation import parse_config, read_document, smoke_document

    document = read_document(args.config)
    for section, key, value in (("model", "spec", args.model), ("model", "device", args.device),
                                ("model", "dtype", args.dtype), ("model", "threads", args.threads),
                                ("task", "path", args.task_path)):
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
        integer("--workers", args.workers)
        config = dataclasses.replace(config, scaleout=dataclasses.replace(config.scaleout, workers=args.workers))
    return config


def _check_outputs(config, what: str) -> None:
    """The results file and its summary can be written, and the results file holds only records of
    this runner (read, never repaired here): all before a model is loaded."""
    from mcmc_llm.evaluation import read_records
    from mcmc_llm.evaluation.results import summary_path
    from mcmc_llm.lm.devices import resolve_device, resolve_dtype

    path = check_output_path(config.output.path, what)
    check_output_path(summary_path(path), f"summary file of {what}")
    records = read_records(path)
    foreign = next((r for r in records if "fingerprint" not in r), None)
    if foreign is not None:
        raise ValueError(f"{what} {path} holds records this runner did not write (no settings fingerprint); "
                         "refusing to add to it: choose another path")
    resolve_dtype(config.model.dtype, resolve_device(config.model.device))


def run(args: argparse.Namespace) -> int:
    from mcmc_llm.evaluation import format_summary, read_records, run_experiment, summarize
    from mcmc_llm.evaluation.results import record_key
    from mcmc_llm.evaluation.scaleout import RayUnavailable

    config = _checked_config(args)
    if args.summary_only:
        names = [m.name for m in config.methods]
        records = [r for r in read_records(config.output.path) if record_key(r)[1] in names]
        print(format_summary(summarize(records, names)))
        return 0
    _check_outputs(config, "--output" if args.output is not None else "[output] path")
    progress = progress_enabled(args)
    if not progress:
        from mcmc_llm.commands.common import quiet_libraries

        quiet_libraries(False)
    try:
        report = run_experiment(config, progress=progress)
    except RayUnavailable as error:
        raise ValueError(str(error)) from None
    except KeyboardInterrupt:
        path = config.output.path
        kept = len(read_records(path)) if Path(path).is_file() else 0
        raise KeyboardInterrupt(f"{kept} record(s) in {path} are kept; rerun the same command to resume") from None
    print(f"{report.path}: {report.generated} new records, {report.skipped} already there, "
          f"{report.wall_time_s:.1f}s")
    print(report.table())
    return 0
