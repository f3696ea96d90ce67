"""`mcmc-llm sample --sampler smc|rollout`: the non-MH samplers behind the `sample` command.

Writes the same JSONL records as the MH path (one per chain: prompt, tokens, text, length,
ended_with_eos, log_p, seed, config) plus each sampler's diagnostics.  For `smc`, each chain is one
independent Power-SMC run with `--particles` particles; its record holds one draw from the run's
weighted particles (sampling-importance-resampling) and the run's log Z_hat, final ESS and number
of resampling events.  For `rollout`, each chain is one independent draw.

Every field of `SMCConfig` / `RolloutConfig` is read from the flag of the same name (`CLI_NAMES`
lists the exceptions), so the command and the configs cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

#: Config fields whose `sample` flag has another name (field -> argparse dest).
CLI_NAMES = {"num_particles": "particles"}


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


def sampler_config(args: argparse.Namespace):
    """The `SMCConfig` or `RolloutConfig` of `args.sampler`, every field from its flag."""
    from mcmc_llm.smc import RolloutConfig, SMCConfig

    config_class = SMCConfig if args.sampler == "smc" else RolloutConfig
    return config_class(**{
        field.name: getattr(args, CLI_NAMES.get(field.name, field.name)) for field in dataclasses.fields(config_class)
    })


def run_sampler(args: argparse.Namespace) -> int:
    from mcmc_llm.lm.registry import load_model
    from mcmc_llm.smc.outputs import rollout_chains, smc_chains

    _check_flags(args)
    config = sampler_config(args)
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    texts = args.prompt or [None]
    prompts = [lm.encode_prompt(text) for text in texts]
    started = time.perf_counter()
    if args.sampler == "smc":
        final, extras, result = smc_chains(lm, prompts, config, args.chains, args.seed)
        summary = f"mean log Z_hat {float(result.log_normalizer.mean()):.3f}"
    else:
        final, extras, result = rollout_chains(lm, prompts, config, args.chains, args.seed)
        summary = f"rollout tokens {result.diagnostics['rollout_tokens']}"
    compute = result.compute
    wall = time.perf_counter() - started
    log_p = final.total_log_p().tolist()
    records = []
    for row, tokens in enumerate(final.to_lists()):
        prompt_index, chain = divmod(row, args.chains)
        records.append({
            "prompt_index": prompt_index, "prompt": texts[prompt_index], "chain": chain, "tokens": tokens,
            "text": lm.decode(tokens), "length": len(tokens), "ended_with_eos": bool(final.ended[row]),
            "log_p": log_p[row], "seed": args.seed, "sampler": args.sampler, "config": dataclasses.asdict(config),
            **extras[row],
        })
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
    if not args.quiet:
        for record in records:
            print(f"--- prompt {record['prompt_index']} chain {record['chain']} "
                  f"(log p = {record['log_p']:.2f}, {record['length']} tokens)")
            print(record["text"])
    print(f"{args.sampler} | {summary} | tokens sampled {compute['tokens_sampled']} | tokens encoded "
          f"{compute['tokens_encoded']} | forward passes {compute['forward_passes']} | wall {wall:.1f}s"
          + (f" | wrote {args.out}" if args.out else ""))
    return 0


__all__ = ["CLI_NAMES", "run_sampler", "sampler_config"]
