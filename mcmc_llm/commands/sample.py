"""`mcmc-llm sample`: run the block-wise power sampler and write one JSONL record per chain."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from mcmc_llm.commands.common import (
    add_model_arguments, add_progress_arguments, add_sample_model_arguments, load_model_and_prompts, old_flag, positive_int,
    prepare_sample_run, print_records, sequence_fields, write_jsonl,
)
from mcmc_llm.proposals.cut_rules import CUT_RULES
from mcmc_llm.drivers.power_config import BATCHING, RATIOS
from mcmc_llm.smc.power_smc import REJUVENATION_POINTS

NAME = "sample"
HELP = "Draw sequences from p(x)^alpha with block-wise Metropolis-Hastings (Algorithm 1)."


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha must be a number > 0 or 'inf', got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"alpha must be a number > 0 or 'inf', got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_sample_model_arguments(parser)
    parser.add_argument("--truncate-prompt", choices=("left",), default=None,
                        help="a prompt longer than the model's context minus --max-new-tokens is an error; "
                             "'left' keeps its last tokens instead (default: error)")
    parser.add_argument("--alpha", type=_alpha, default=4.0, help="power alpha > 0 of the target p^alpha; 'inf' = max-swap")
    parser.add_argument("--block-size", type=positive_int("--block-size", 1), default=192, help="tokens per block B")
    parser.add_argument("--max-new-tokens", type=positive_int("--max-new-tokens", 1), default=3072, help="length cap T_max")
    parser.add_argument("--mcmc-steps", type=positive_int("--mcmc-steps", 0), default=10, help="MH steps per block N_MCMC")
    parser.add_argument("--cut-rule", dest="cut_rule", choices=CUT_RULES, default="uniform",
                        help="cut rule of the suffix proposal: uniform (paper), within-block (author's note), restart, "
                             "priority, entropy")
    parser.add_argument("--kernel", dest="cut_rule", choices=CUT_RULES, action=old_flag("--cut-rule"), help=argparse.SUPPRESS)
    parser.add_argument("--chains", type=positive_int("--chains", 1), default=1, help="independent chains per prompt (batched)")
    parser.add_argument("--seed", type=positive_int("--seed", 0), default=0, help="random seed; a run is deterministic given it")
    parser.add_argument("--proposal-temperature", type=float, default=None,
                        help="proposal temperature (default 1/alpha; 0.25 for alpha=inf)")
    parser.add_argument("--top-k", type=int, default=None, help="truncate proposals to the top k tokens (default: full support, exact)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus truncation of proposals (default: full support, exact)")
    parser.add_argument("--cut-sharpness", type=float, default=1.0, help="beta of the priority and entropy cut rules")
    parser.add_argument("--ratio", choices=RATIOS, default="exact",
                        help="MH ratio: exact; published (the published code's biased ratio in our chain); or "
                             "reference (a copy of the published code's whole chain: proposal length, top-k 50, "
                             "ratio, early stop at EOS). The last two are for comparisons only")
    parser.add_argument("--batching", choices=BATCHING, default=BATCHING[0],
                        help="continuous: chains step asynchronously and refill one batch (faster); lockstep: all chains "
                             "take each MH step together. Same chains for a seed (per-chain random streams)")
    parser.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                        help="continuous batching: leave idle rows idle instead of pre-fetching each chain's next "
                             "proposal for both outcomes of its MH step (same chains for a seed)")
    parser.add_argument("--no-early-reject", dest="early_reject", action="store_false",
                        help="decode every proposal to its end, even once its move is certain to be rejected "
                             "(early rejection is exact: the same chains for a seed, fewer tokens)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write one JSON record per chain to this JSONL file (replaces an earlier `sample` "
                             "output; any other existing file is refused)")
    parser.add_argument("--save-trace", action="store_true",
                        help="also save the per-step trace next to --out (FILE.trace.npz) for `mcmc-llm diagnose`")
    parser.add_argument("--quiet", action="store_true", help="print only the summary: no decoded samples, no progress bars")
    add_progress_arguments(parser)
    parser.add_argument("--sampler", choices=("mh", "smc", "rollout"), default="mh",
                        help="mh: block-wise Metropolis-Hastings (Algorithm 1); smc: Power-SMC, each chain is one "
                             "independent SMC run reporting one draw from its weighted particles; rollout: the "
                             "rollout sampler (top-K candidates, M rollouts each; biased, see docs/smc.md)")
    parser.add_argument("--particles", type=positive_int("--particles", 1), default=16, help="smc: particles per run")
    parser.add_argument("--resampling", choices=("multinomial", "stratified", "systematic", "residual"),
                        default="systematic", help="smc: resampling scheme")
    parser.add_argument("--ess-threshold", type=float, default=0.5,
                        help="smc: resample when ESS < this fraction of the particles")
    parser.add_argument("--ramp-tokens", type=positive_int("--ramp-tokens", 0), default=0,
                        help="smc: raise the exponent from 1 to alpha over this many tokens (0: alpha from the start)")
    parser.add_argument("--rejuvenation-steps", type=positive_int("--rejuvenation-steps", 0), default=0,
                        help="smc: MH rejuvenation steps per rejuvenation (0: none)")
    parser.add_argument("--rejuvenation-cut-rule", dest="rejuvenation_cut_rule", choices=CUT_RULES,
                        default="uniform", help="smc: cut rule of the rejuvenation moves")
    parser.add_argument("--rejuvenation-kernel", dest="rejuvenation_cut_rule", choices=CUT_RULES,
                        action=old_flag("--rejuvenation-cut-rule"), help=argparse.SUPPRESS)
    parser.add_argument("--rejuvenate", choices=REJUVENATION_POINTS, default="end",
                        help="smc: when to rejuvenate: end (once, after a final resampling) or resampling (also "
                             "during the run: resample and move all of a run's particles at the steps where an "
                             "independent pilot run without moves resampled: a schedule fixed in advance, which "
                             "keeps Z_hat unbiased; the pilot roughly doubles the generation cost)")
    parser.add_argument("--all-particles", action="store_true",
                        help="smc: write every particle of every run (one record per particle: the per-run fields "
                             "plus `particle`, its normalised `log_weight` and the run's `log_z_hat`) instead of "
                             "one draw per run")
    parser.add_argument("--rollouts", type=positive_int("--rollouts", 1), default=4, help="rollout: rollouts M per candidate")
    parser.add_argument("--top-candidates", type=positive_int("--top-candidates", 1), default=8,
                        help="rollout: candidate next tokens K (by base probability)")
    parser.add_argument("--no-jackknife", dest="jackknife", action="store_false",
                        help="rollout: no jackknife correction of the next-token probabilities")
    parser.add_argument("--horizon", type=positive_int("--horizon", 1), default=None,
                        help="rollout: stop rollouts after this many tokens (default: run to EOS or the cap)")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "all_particles", False) and getattr(args, "sampler", "mh") != "smc":
        raise ValueError(f"--all-particles needs --sampler smc, got --sampler {getattr(args, 'sampler', 'mh')}")
    if getattr(args, "sampler", "mh") != "mh":
        from mcmc_llm.commands.sample_smc import run_sampler

        return run_sampler(args)
    from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample

    config = PowerSamplerConfig(
        alpha=args.alpha, block_size=args.block_size, max_new_tokens=args.max_new_tokens,
        mcmc_steps=args.mcmc_steps, cut_rule=args.cut_rule, proposal_temperature=args.proposal_temperature,
        top_k=args.top_k, top_p=args.top_p, cut_sharpness=args.cut_sharpness, ratio=args.ratio, batching=args.batching,
        prefetch=args.prefetch, early_reject=args.early_reject,
    )
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
