"""`mcmc-llm diagnose PATH`: summary table and plots for a saved run.

PATH is a run's JSONL (written by `mcmc-llm sample --out FILE --save-trace`, whose trace is
FILE.trace.npz), the .trace.npz itself, or a folder holding such files.  For each prompt the
chains of that prompt are summarised together (acceptance overall / by stage / by cut
position, bulk and tail ESS and R-hat, stuck-chain flags), and plots are written next to the
trace: a trace plot and an acceptance heatmap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "diagnose"
HELP = "Summarise a saved run (acceptance, ESS, R-hat, stuck chains) and write diagnostic plots next to it."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a run's JSONL (with FILE.trace.npz beside it), a .trace.npz, or a folder")
    parser.add_argument("--rhat-max", type=float, default=1.1, help="flag functionals whose R-hat exceeds this")
    parser.add_argument("--min-ess", type=float, default=10.0, help="flag functionals whose bulk ESS is below this")
    parser.add_argument("--all-stages", action="store_true",
                        help="compute ESS and R-hat over every stage (default: the last stage, whose target is fixed)")
    parser.add_argument("--no-plots", action="store_true", help="print the summary only")


def find_traces(path: Path) -> list[Path]:
    if path.is_dir():
        traces = sorted(path.glob("*.trace.npz"))
    elif path.name.endswith(".trace.npz"):
        traces = [path]
    else:
        traces = [path.with_name(path.name + ".trace.npz")]
    missing = [str(p) for p in traces if not p.exists()]
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if not traces or missing:
        raise ValueError(
            f"no saved trace found for {path} (looked for {', '.join(missing) or '*.trace.npz'}); "
            "run `mcmc-llm sample --out FILE.jsonl --save-trace` to save one"
        )
    return traces


def run(args: argparse.Namespace) -> int:
    from mcmc_llm.core.trace import Trace
    from mcmc_llm.diagnostics import Thresholds, format_summary, summarize
    from mcmc_llm.diagnostics.io import load_trace, load_trace_metadata

    thresholds = Thresholds(rhat_max=args.rhat_max, min_ess=args.min_ess)
    any_flag = False
    for trace_file in find_traces(args.path):
        trace = load_trace(trace_file)
        metadata = load_trace_metadata(trace_file)
        chains = int(metadata.get("chains_per_prompt", trace.num_chains))
        prompts = max(trace.num_chains // chains, 1)
        stem = trace_file.with_name(trace_file.name[: -len(".trace.npz")])
        print(f"== {trace_file} ({prompts} prompt(s) x {chains} chain(s), {trace.num_draws} steps)")
        for prompt in range(prompts):
            rows = slice(prompt * chains, (prompt + 1) * chains)
            part = Trace({k: v[rows] for k, v in trace.samples.items()}, {k: v[rows] for k, v in trace.stats.items()})
            summary = summarize(part, stage=None if args.all_stages else -1, thresholds=thresholds)
            print(f"-- prompt {prompt}")
            print(format_summary(summary))
            any_flag |= not summary.ok
            if not args.no_plots:
                from mcmc_llm.diagnostics import plots

                written = [
                    plots.plot_trace(part, ["log_p", "length"], f"{stem}.prompt{prompt}.trace.png",
                                     title=f"prompt {prompt}: log p(x) and length per MH step"),
                    plots.plot_acceptance_heatmap(part, f"{stem}.prompt{prompt}.acceptance.png"),
                ]
                print("plots written: " + ", ".join(str(p) for p in written))
    if any_flag:
        print("WARNING: some chains or functionals were flagged (see above)")
    return 0
