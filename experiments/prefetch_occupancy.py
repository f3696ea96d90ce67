"""How full the decoding batch stays, with and without pre-fetching, counted in decoding steps.

On a machine where a decoding step costs about the same at any batch size up to C rows (the
embedded model on this CPU in bfloat16: 66 ms at 1 row, 80 ms at 8), the sampler's tokens/s
against plain generation is close to its occupancy

    occupancy = tokens the chains used / (C x decoding steps),

which a chain-level schedule decides alone.  This script measures it without model timing, so
without machine noise: a toy LM whose EOS probability is ~0 (every proposal runs to its cap, as
on the benchmark's story prompt) runs the benchmark's `--quick` schedule (alpha 4, B = 16,
T = 64, N_MCMC = 2, C = 8 chains) for many seeds, continuous batching with and without
`prefetch`, side by side.

    python experiments/prefetch_occupancy.py            # 200 seeds, ~1 minute
    python experiments/prefetch_occupancy.py --seeds 20 --chains 8 --mcmc-steps 4

Prints a line per setting as it finishes, a table and, last, a JSON line.  One torch thread unless
`--threads N` or OMP_NUM_THREADS (`mcmc_llm.lm.threads`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.lm.generation import ContinuousBatch
from mcmc_llm.lm.threads import configure_threads
from mcmc_llm.lm.toy import NgramLM
from mcmc_llm.drivers import asynchronous as continuous
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.scripts import script_main


class _CountingBatch(ContinuousBatch):
    """`ContinuousBatch` that counts its decoding steps (a toy LM's `admit` is two calls, so its
    `forward_passes` overcounts them)."""

    steps = 0

    def step(self):
        _CountingBatch.steps += 1
        return super().step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=4.0)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--mcmc-steps", type=int, default=2)
    add_threads_argument(parser)
    args = parser.parse_args()
    configure_threads(args.threads, "cpu")
    continuous.ContinuousBatch = _CountingBatch  # the asynchronous chains' engine, instrumented
    lm = NgramLM.random(64, 2, seed=0, eos_logit=-30.0)
    config = PowerSamplerConfig(alpha=args.alpha, block_size=args.block_size, max_new_tokens=args.max_new_tokens,
                                mcmc_steps=args.mcmc_steps)
    rows = {}
    for prefetch in (False, True):
        occupancy, steps, discarded, acceptance = [], [], [], []
        for seed in range(args.seeds):
            lm.counter.reset()
            _CountingBatch.steps = 0
            run = power_sample(lm, [[1, 2, 3]], dataclasses.replace(config, prefetch=prefetch),
                               chains_per_prompt=args.chains, seed=seed)
            compute = run.compute
            steps.append(_CountingBatch.steps)
            occupancy.append(compute["tokens_sampled"] / (args.chains * _CountingBatch.steps))
            discarded.append(compute["tokens_discarded"] / compute["tokens_sampled"])
            acceptance.append(run.trace.acceptance_rate())
        rows[prefetch] = {
            "occupancy_mean": statistics.fmean(occupancy), "occupancy_min": min(occupancy),
            "occupancy_median": statistics.median(occupancy), "steps_mean": statistics.fmean(steps),
            "discarded_per_used_token": statistics.fmean(discarded), "acceptance": statistics.fmean(acceptance),
        }
        print(f"prefetch {prefetch}: {args.seeds} seeds done", flush=True)
    print(f"{args.seeds} seeds, {args.chains} chains, alpha={args.alpha}, B={args.block_size}, "
          f"T={args.max_new_tokens}, N_MCMC={args.mcmc_steps}; toy LM without EOS")
    print(f"{'prefetch':>9} {'occupancy mean':>15} {'median':>7} {'min':>6} {'steps':>7} {'discarded/used':>15} {'acceptance':>11}")
    for prefetch, row in rows.items():
        print(f"{str(prefetch):>9} {row['occupancy_mean']:>15.3f} {row['occupancy_median']:>7.3f} {row['occupancy_min']:>6.3f} "
              f"{row['steps_mean']:>7.1f} {row['discarded_per_used_token']:>15.3f} {row['acceptance']:>11.3f}")
    print(json.dumps({"without_prefetch": rows[False], "with_prefetch": rows[True]}))


if __name__ == "__main__":
    script_main(main)
