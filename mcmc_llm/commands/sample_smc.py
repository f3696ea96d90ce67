"""`mcmc-llm sample --sampler smc|rollout`: the non-MH samplers behind the `sample` command.

Writes the same JSONL records as the MH path (one per chain: prompt, tokens, text, length,
ended_with_eos, log_p, token_logprobs with --token-logprobs, seed, config) plus each sampler's diagnostics.  For `smc`, each chain is one
independent Power-SMC run with `--particles` particles; its record holds one draw from the run's
weighted particles (sampling-importance-resampling) and the run's log Z_hat, final ESS and number
of resampling events.  With `--all-particles` (smc only) it writes instead every particle of every
run, one record each: the run's fields plus `particle`, the particle's `log_weight` (normalised
within the run: logsumexp over its particles is 0) and the run's `log_z_hat`.  For `rollout`,
each chain is one independent draw.

Every field of `SMCConfig` / `RolloutConfig` is read from the flag of the same name (`CLI_NAMES`
lists the exceptions; `mcmc_llm.commands.sampler_flags` builds the flags from the fields), so the
command and the configs cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from mcmc_llm.commands.common import (
    load_model_and_prompts, prepare_sample_run, print_records, sequence_fields, write_jsonl,
)
from mcmc_llm.commands.sampler_flags import CLI_NAMES, sampler_config


def _check_flags(args: argparse.Namespace) -> None:
    if args.top_k is not None or args.top_p is not None:
        raise ValueError(f"--sampler {args.sampler} needs a full-support proposal: drop --top-k / --top-p")
    if args.save_trace:
        raise ValueError("--save-trace is only available with --sampler mh")
    if args.ratio != "exact":
        raise ValueError("--ratio applies to --sampler mh only")
    if not 0 <= args.ess_threshold <= 1:
        raise ValueError(f"--ess-threshold must be a fraction in [0, 1], got {args.ess_threshold}")
    if args.alpha == float("inf"):
        raise ValueError(f"--sampler {args.sampler} needs a finite --alpha")
    if getattr(args, "all_particles", False) and args.sampler != "smc":
        raise ValueError(f"--all-particles needs --sampler smc, got --sampler {args.sampler}")


def run_sampler(args: argparse.Namespace) -> int:
    from mcmc_llm.rollout.outputs import rollout_chains
    from mcmc_llm.smc.outputs import smc_chains

    _check_flags(args)
    config = sampler_config(args)
    prepare_sample_run(args)
    lm, texts, prompts = load_model_and_prompts(args)
    started = time.perf_counter()
    try:
        if args.sampler == "smc":
            final, extras, result = smc_chains(lm, prompts, config, args.chains, args.seed)
            summary = f"mean log Z_hat {float(result.log_normalizer.mean()):.3f}"
        else:
            final, extras, result = rollout_chains(lm, prompts, config, args.chains, args.seed)
            summary = f"rollout tokens {result.diagnostics['rollout_tokens']}"
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"nothing written to {args.out} (sample writes it when every run has finished)"
                                if args.out else "") from None
    compute = result.compute
    wall = time.perf_counter() - started
    all_particles, per_run = getattr(args, "all_particles", False), 1
    if all_particles:  # every particle: run r's particles are rows r*P .. r*P + P - 1
        final, per_run = result.particles, config.num_particles
        log_weights, log_z_hat = result.log_weights.reshape(-1).tolist(), result.log_normalizer.tolist()
    records = []
    for row, fields in enumerate(sequence_fields(final, lm, args)):
        run, particle = divmod(row, per_run)
        prompt_index, chain = divmod(run, args.chains)
        record = {
            "prompt_index": prompt_index, "prompt": texts[prompt_index], "chain": chain, **fields,
            "seed": args.seed, "sampler": args.sampler, "config": dataclasses.asdict(config), **extras[run],
        }
        if all_particles:
            record.update(particle=particle, log_weight=log_weights[row], log_z_hat=log_z_hat[run])
        records.append(record)
    if args.out is not None:
        write_jsonl(args.out, records)
    if not args.quiet:
        print_records(records)
    print(f"{args.sampler} | {summary} | tokens sampled {compute['tokens_sampled']} | tokens encoded "
          f"{compute['tokens_encoded']} | forward passes {compute['forward_passes']} | wall {wall:.1f}s"
          + (f" | wrote {args.out}" if args.out else ""))
    return 0


__all__ = ["CLI_NAMES", "run_sampler", "sampler_config"]
