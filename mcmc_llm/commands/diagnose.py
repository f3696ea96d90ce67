"""`mcmc-llm diagnose PATH`: summary table and plots for a saved run.

PATH is a run's JSONL (written by `mcmc-llm sample --out FILE --save-trace`, whose trace is
FILE.trace.npz), the .trace.npz itself, or a folder holding such files.  For each prompt the
chains of that prompt are summarised together (acceptance overall / by stage / by cut
position, bulk and tail ESS and R-hat, stuck-chain flags), and plots are written next to the
trace: a trace plot and an acceptance heatmap.  ESS and R-hat use the draws of `--stages`: the
last stage (default), every stage ("all", what `az.summary(trace_to_arviz(trace))` uses) or stage N;
the header of each prompt says which.

PATH may also be the results JSONL of `mcmc-llm run` (or a folder holding one and no trace): its
records are summarised per method and per problem (`commands.diagnose_records`).

Checks first: the trace must be a readable saved trace, and when the run's JSONL is there it must
agree with the trace (one record per chain, the same prompts and chains, the same number of steps
and the same final log p), else a one-line error.  Changes of a float functional of at most
`NOISE_RTOL` (1e-4) relative at a step where the chain's sequence did not change are float noise,
not movement: they are removed before the summary, the flags and the plots
(`mcmc_llm.diagnostics.noise`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

NAME = "diagnose"
HELP = "Summarise a saved run (acceptance, ESS, R-hat, stuck chains) and write diagnostic plots next to it."
SUFFIX = ".trace.npz"
TRACE_PLOT = ("log_p", "length", "accepted", "tokens_resampled")  # the rows of the trace plot, when recorded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a `sample` run's JSONL (with FILE.trace.npz beside it), a .trace.npz, "
                        "a `run` results JSONL, or a folder")
    parser.add_argument("--rhat-max", type=float, default=1.1, help="flag functionals whose R-hat exceeds this")
    parser.add_argument("--min-ess", type=float, default=10.0, help="flag functionals whose bulk or tail ESS is below this")
    parser.add_argument("--stages", type=_stages, default="last", metavar="last|all|N",
                        help="the draws ESS and R-hat use: the last stage (default; its target is p^alpha on the full "
                             "length), all stages (as az.summary(trace_to_arviz(trace)) does), or stage N (0-based)")
    parser.add_argument("--all-stages", dest="stages", action="store_const", const="all", help=argparse.SUPPRESS)
    parser.add_argument("--no-plots", action="store_true", help="print the summary only")


def _stages(text: str):
    from mcmc_llm.diagnostics.stages import parse_stages

    try:
        return parse_stages(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--stages ")) from None


def find_traces(path: Path) -> list[Path]:
    """The saved traces at `path`, or [] when `path` is (or a folder holds) a `mcmc-llm run` results file."""
    from mcmc_llm.commands.diagnose_records import find_results

    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.is_dir():
        traces = sorted(path.glob("*" + SUFFIX))
    elif path.name.endswith(SUFFIX):
        traces = [path]
    else:
        traces = [path.with_name(path.name + SUFFIX)]
    missing = [str(p) for p in traces if not p.exists()]
    if (not traces or missing) and find_results(path):
        return []
    if not traces or missing:
        raise ValueError(
            f"no saved trace found for {path} (looked for {', '.join(missing) or '*' + SUFFIX}), and it is not "
            "a `mcmc-llm run` results file; run `mcmc-llm sample --out FILE.jsonl --save-trace` to save a trace"
        )
    return traces


def read_run_records(path: Path) -> list[dict]:
    """The records of a run's JSONL; ValueError naming the file and line of anything else."""
    records = []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            cut = " (truncated?)" if number == len(lines) else ""
            raise ValueError(f"{path}:{number}: not valid JSON{cut}: {error}") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt_index"), int) \
                or not isinstance(record.get("chain"), int):
            raise ValueError(f"{path}:{number}: not a `mcmc-llm sample` record (needs integer prompt_index and chain)")
        records.append(record)
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


def check_agreement(records: list[dict], trace, chains: int, jsonl: Path, trace_file: Path) -> None:
    """ValueError unless the JSONL and the trace describe the same chains (see the module docstring)."""
    import numpy as np

    prompts = max(trace.num_chains // chains, 1)
    where = f"{jsonl} and {trace_file} disagree"
    if len(records) != trace.num_chains:
        raise ValueError(f"{where}: {len(records)} records but {trace.num_chains} chains in the trace")
    expected = {(p, c) for p in range(prompts) for c in range(chains)}
    found = {(r["prompt_index"], r["chain"]) for r in records}
    if found != expected:
        extra = sorted(found - expected)[:3] or sorted(expected - found)[:3]
        raise ValueError(f"{where}: (prompt_index, chain) pairs differ, e.g. {extra}")
    final = trace.samples.get("log_p")
    for record in records:
        row = record["prompt_index"] * chains + record["chain"]
        if "steps" in record and record["steps"] != trace.num_draws:
            raise ValueError(f"{where}: record {row} has {record['steps']} steps, the trace {trace.num_draws}")
        if final is not None and isinstance(record.get("log_p"), (int, float)):
            values = np.asarray(final[row], dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size and not math.isclose(values[-1], record["log_p"], rel_tol=1e-5, abs_tol=1e-5):
                raise ValueError(f"{where}: chain {row} ends at log p = {values[-1]:.6g} in the trace but "
                                 f"{record['log_p']:.6g} in the JSONL")


def run(args: argparse.Namespace) -> int:
    from mcmc_llm.commands.common import check_output_path
    from mcmc_llm.core.trace import Trace
    from mcmc_llm.diagnostics import Thresholds, format_summary, summarize
    from mcmc_llm.diagnostics.io import load_trace, load_trace_metadata
    from mcmc_llm.diagnostics.noise import NOISE_RTOL, snap_noise
    from mcmc_llm.diagnostics.stages import stage_mask

    thresholds = Thresholds(rhat_max=args.rhat_max, min_ess=args.min_ess)
    traces = find_traces(args.path)
    if not traces:
        from mcmc_llm.commands.diagnose_records import diagnose_results

        return diagnose_results(args.path, thresholds, plots=not args.no_plots, stages=args.stages)
    loaded = []
    for trace_file in traces:  # read and check everything before printing or writing anything
        trace = load_trace(trace_file)
        metadata = load_trace_metadata(trace_file)
        chains = metadata.get("chains_per_prompt", trace.num_chains)
        if not isinstance(chains, int) or chains < 1 or trace.num_chains % chains:
            raise ValueError(f"{trace_file}: chains_per_prompt {chains!r} does not divide its {trace.num_chains} chains")
        stage_mask(trace, args.stages)  # a stage the trace lacks is an error before any output
        stem = trace_file.with_name(trace_file.name[: -len(SUFFIX)])
        if stem.is_file():
            check_agreement(read_run_records(stem), trace, chains, stem, trace_file)
        if not args.no_plots:
            check_output_path(f"{stem}.prompt0.trace.png", "plot")
        loaded.append((trace_file, snap_noise(trace), chains, stem))
    any_flag = False
    for trace_file, trace, chains, stem in loaded:
        prompts = max(trace.num_chains // chains, 1)
        print(f"== {trace_file} ({prompts} prompt(s) x {chains} chain(s), {trace.num_draws} steps; "
              f"float noise below {NOISE_RTOL:g} relative ignored; ESS / R-hat on --stages {args.stages}"
              + ("" if args.stages == "all" else "; --stages all uses every draw, as az.summary(trace_to_arviz(trace)) does")
              + ")")
        for prompt in range(prompts):
            rows = slice(prompt * chains, (prompt + 1) * chains)
            part = Trace({k: v[rows] for k, v in trace.samples.items()}, {k: v[rows] for k, v in trace.stats.items()})
            summary = summarize(part, stage=args.stages, thresholds=thresholds)
            print(f"-- prompt {prompt}")
            print(format_summary(summary))
            any_flag |= not summary.ok
            if not args.no_plots:
                from mcmc_llm.diagnostics import plots
                from mcmc_llm.diagnostics.noise import merge_close_values

                shown = Trace({k: merge_close_values(v) for k, v in part.samples.items()}, part.stats)
                written = [
                    plots.plot_trace(shown, [n for n in TRACE_PLOT if n in {**shown.samples, **shown.stats}],
                                     f"{stem}.prompt{prompt}.trace.png",
                                     title=f"prompt {prompt}: log p(x), length, acceptance and tokens per MH step"),
                    plots.plot_acceptance_heatmap(part, f"{stem}.prompt{prompt}.acceptance.png"),
                ]
                print("plots written: " + ", ".join(str(p) for p in written))
    if any_flag:
        print("WARNING: some chains or functionals were flagged (see above)")
    return 0
