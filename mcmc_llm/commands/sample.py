"""`mcmc-llm sample`: draw sequences from p(x)^alpha and write one JSONL record per chain.

`--sampler mh` (the default, block-wise Metropolis-Hastings) runs here; `smc` and `rollout` in
`mcmc_llm.commands.sample_smc`.  The sampler flags and the config each run uses are built from the
config dataclasses (`mcmc_llm.commands.sampler_flags`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mcmc_llm.commands.common import (
    add_model_arguments, add_progress_arguments, add_sample_model_arguments, load_model_and_prompts,
    prepare_sample_run, print_records, sequence_fields, write_jsonl,
)
from mcmc_llm.commands.sampler_flags import add_sampler_arguments, sampler_config

NAME = "sample"
HELP = "Draw sequences from p(x)^alpha with block-wise Metropolis-Hastings (Algorithm 1)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_sample_model_arguments(parser)
    parser.add_argument("--truncate-prompt", choices=("left",), default=None,
                        help="a prompt longer than the model's context minus --max-new-tokens is an error; "
                             "'left' keeps its last tokens instead (default: error)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write one JSON record per chain to this JSONL file (replaces an earlier `sample` "
                             "output; any other existing file is refused)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary: no decoded samples, no progress bars")
    add_progress_arguments(parser)
    groups = add_sampler_arguments(parser)
    groups["mh"].add_argument("--save-trace", action="store_true",
                              help="also save the per-step trace next to --out (FILE.trace.npz) for `mcmc-llm diagnose`")
    groups["smc"].add_argument("--all-particles", action="store_true",
                               help="write every particle of every run (one record per particle: the per-run fields "
                                    "plus `particle`, its normalised `log_weight` and the run's `log_z_hat`) instead "
                                    "of one draw per run")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "all_particles", False) and getattr(args, "sampler", "mh") != "smc":
        raise ValueError(f"--all-particles needs --sampler smc, got --sampler {getattr(args, 'sampler', 'mh')}")
    if getattr(args, "sampler", "mh") != "mh":
        from mcmc_llm.commands.sample_smc import run_sampler

        return run_sampler(args)
    from mcmc_llm.drivers.power import power_sample

    config = sampler_config(args)  # a PowerSamplerConfig, every field from its flag
    if args.save_trace and args.out is None:
        raise ValueError("--save-trace needs --out FILE (the trace is written next to it)")
    progress = prepare_sample_run(args, trace_path(args.out) if args.out is not None and args.save_trace else None)
    lm, texts, prompts = load_model_and_prompts(args)
    started = time.perf_counter()
    try:
        result = power_sample(lm, prompts, config, chains_per_prompt=args.chains, seed=args.seed, progress=progress)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"nothing written to {args.out} (sample writes it when every chain has finished)"
                                if args.out else "") from None
    wall = time.perf_counter() - started
    records = result_records(result, lm, texts, config, args)
    if args.out is not None:
        write_jsonl(args.out, records)
        if args.save_trace and result.trace is not None:
            import dataclasses

            from mcmc_llm.diagnostics.io import save_trace

            save_trace(result.trace, trace_path(args.out), metadata={
                "chains_per_prompt": args.chains, "model": args.model, "seed": args.seed,
                "config": dataclasses.asdict(config),
            })
    if not args.quiet:
        print_records(records)
    acceptance = result.trace.acceptance_rate() if result.trace is not None else float("nan")
    compute = result.compute
    discarded = f" (+{compute['tokens_discarded']} pre-fetched and discarded)" if compute["tokens_discarded"] else ""
    print(f"acceptance {acceptance:.3f} | tokens sampled {compute['tokens_sampled']}{discarded} | "
          f"tokens encoded {compute['tokens_encoded']} | forward passes {compute['forward_passes']} | "
          f"wall {wall:.1f}s" + (f" | wrote {args.out}" if args.out else ""))
    return 0


def trace_path(out: Path) -> Path:
    return out.with_name(out.name + ".trace.npz")


def result_records(result, lm, texts, config, args) -> list[dict]:
    """One JSON-ready record per chain: the prompt, the chain's sequence (`sequence_fields`) and its
    diagnostics."""
    import dataclasses

    trace = result.trace
    records = []
    for row, fields in enumerate(sequence_fields(result.final, lm, args)):
        prompt_index, chain = divmod(row, result.chains_per_prompt)
        record = {"prompt_index": prompt_index, "prompt": texts[prompt_index], "chain": chain, **fields,
                  "seed": args.seed, "config": dataclasses.asdict(config)}
        if trace is not None:
            record["steps"] = int(trace.stats["accepted"].shape[1])
            record["acceptance_rate"] = float(np.nanmean(trace.stats["accepted"][row]))  # NaN: a stopped chain's cells
            record["tokens_resampled"] = int(trace.stats["tokens_resampled"][row].sum())
        records.append(record)
    return records
