"""`mcmc-llm diagnose` on the results JSONL of `mcmc-llm run`: a summary per method and per problem.

The samples of one (method, problem) are independent chains (`mcmc_llm.diagnostics.records`).  For
each method, in the order of the file:

- a method whose records list no MH steps (baseline methods, SMC) gets one line saying so;
- a method with per-step data (`power`) gets its acceptance pooled over problems (overall and per
  stage) and a table with one row per problem: chains, MH steps per chain, acceptance overall and
  per stage, R-hat and bulk ESS of log p and of the length on the draws of `--stages` (records
  that list the chain's state after every step; older records hold acceptance only, and the
  report says so), and flags (a chain that accepted none of its moves, R-hat or ESS past the
  thresholds).

With plots, one acceptance heatmap per method with per-step data is written beside the results file,
FILE.<method>.acceptance.png (every chain of every problem).
"""

from __future__ import annotations

import json
from pathlib import Path

NO_ESS = ("ESS / R-hat: not available: the records hold per-step acceptance only, not a per-step functional "
          "of the chain (log p, length); `mcmc-llm sample --save-trace` saves one")


def _is_results_file(path: Path) -> bool:
    from mcmc_llm.diagnostics.records import is_results_record

    try:
        with path.open("rb") as handle:
            first = next((line for line in handle if line.strip()), b"")
        return is_results_record(json.loads(first))
    except (OSError, ValueError):
        return False


def find_results(path: Path) -> list[Path]:
    """The `mcmc-llm run` results files at `path`: the file itself, or the .jsonl files of a folder."""
    candidates = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [candidate for candidate in candidates if candidate.is_file() and _is_results_file(candidate)]


def _stage_rates(summary) -> str:
    return " ".join(f"{cell.key}:{cell.acceptance_rate:.2f}" for cell in summary.by_stage) or "-"


def _convergence(summary) -> list[str]:
    """R-hat and bulk ESS of log p and length, as table cells ("-" when not recorded)."""
    cells = []
    for name in ("log_p", "length"):
        functional = summary.functionals.get(name)
        cells.append("-" if functional is None else f"{functional.rhat:.3f} / {functional.ess_bulk:.0f}")
    return cells


def _method_lines(entry, thresholds, stages="last") -> tuple[list[str], bool]:
    """The report of one method, and whether any of its chains was flagged."""
    from mcmc_llm.diagnostics.records import pooled_trace
    from mcmc_llm.diagnostics.summary import format_table, summarize

    head = f"-- method {entry.method} (kind {entry.kind or '?'}, {entry.records} records)"
    if not entry.has_steps:
        return [f"{head}: no per-step data: its records list no MH steps (only power-sampling records do); "
                "nothing to diagnose"], False
    pooled = summarize(pooled_trace(list(entry.traces.values())), thresholds=thresholds)
    states = any(trace is not None and trace.samples for trace in entry.traces.values())
    lines = [f"{head}: {len(entry.traces)} problems; acceptance {pooled.acceptance_rate:.3f} over "
             f"{pooled.num_moves} moves; by stage {_stage_rates(pooled)}",
             f"   R-hat / bulk ESS per problem on --stages {stages}, the problem's chains together" if states else f"   {NO_ESS}"]
    rows, flagged = [], False
    for task_id, trace in entry.traces.items():
        if trace is None:
            rows.append([task_id, "-", "-", "-", "-", "-", "-", "no per-step data"])
            continue
        summary = summarize(trace, thresholds=thresholds, stage=stages if trace.samples else None)
        flagged |= not summary.ok
        flags = "; ".join(flag.message for flag in summary.flags) or "-"
        rows.append([task_id, str(trace.num_chains), str(trace.num_draws), f"{summary.acceptance_rate:.3f}",
                     _stage_rates(summary), *_convergence(summary), flags])
    lines += format_table(["problem", "chains", "steps", "accept", "accept by stage", "R-hat / ESS log p",
                           "R-hat / ESS length", "flags"], rows)
    return lines, flagged


def diagnose_results(path: Path, thresholds, *, plots: bool, stages="last") -> int:
    """Print the per-method, per-problem report of every results file at `path` (and write heatmaps)."""
    from mcmc_llm.commands.common import check_output_path
    from mcmc_llm.diagnostics.records import method_traces, pooled_trace
    from mcmc_llm.evaluation.results import read_records

    loaded = []
    for results in find_results(path):  # read and check everything before printing or writing anything
        methods = method_traces(read_records(results))
        if plots:
            for entry in methods:
                if entry.has_steps:
                    check_output_path(f"{results}.{entry.method}.acceptance.png", "plot")
        loaded.append((results, methods))
    any_flag = False
    for results, methods in loaded:
        problems = {task_id for entry in methods for task_id in entry.traces}
        records = sum(entry.records for entry in methods)
        print(f"== {results} (`mcmc-llm run` results: {records} records, {len(methods)} methods, "
              f"{len(problems)} problems; the samples of a method on a problem are its chains)")
        for entry in methods:
            lines, flagged = _method_lines(entry, thresholds, stages)
            print("\n".join(lines))
            any_flag |= flagged
            if plots and entry.has_steps:
                from mcmc_llm.diagnostics.plots import plot_acceptance_heatmap

                written = plot_acceptance_heatmap(pooled_trace(list(entry.traces.values())),
                                                  f"{results}.{entry.method}.acceptance.png",
                                                  title=f"{entry.method}: MH acceptance by stage and cut position")
                print(f"plots written: {written}")
    if any_flag:
        print("WARNING: some chains were flagged (see above)")
    return 0
