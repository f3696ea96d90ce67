"""Time the power sampler's driver without a model: milliseconds per decoding step on a toy LM.

A toy n-gram LM whose forward pass costs next to nothing, with no EOS, on the `--quick` schedule
of `bench_throughput.py` (8 chains, T = 64, B = 16, N_MCMC = 2): the wall time per decoding step is
then almost all driver work (requests, streams, plans, MH decisions, bookkeeping), which a real
model's step hides.  Run it from two checkouts to compare drivers side by side:

    python experiments/driver_overhead.py [LABEL]

Prints the figure of each of 3 repeats (10 seeds each).  One torch thread unless `--threads N` or
OMP_NUM_THREADS (`mcmc_llm.lm.threads`).
"""

from __future__ import annotations

import argparse
import time

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.threads import configure_threads
from mcmc_llm.lm.toy import NgramLM
from mcmc_llm.scripts import script_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("label", nargs="?", default="driver", help="printed before the figures (e.g. the checkout's name)")
    add_threads_argument(parser)
    args = parser.parse_args()
    configure_threads(args.threads, "cpu")
    lm = NgramLM.random(8, 2, seed=0, eos_logit=-30.0)
    config = PowerSamplerConfig(alpha=4.0, block_size=16, max_new_tokens=64, mcmc_steps=2)
    power_sample(lm, [[1, 2]], config, chains_per_prompt=8, seed=0)  # warm-up
    per_step = []
    for _ in range(3):
        started, passes = time.perf_counter(), 0
        for seed in range(10):
            lm.counter.reset()
            passes += power_sample(lm, [[1, 2]], config, chains_per_prompt=8, seed=seed).compute["forward_passes"]
        per_step.append((time.perf_counter() - started) / passes * 1e3)
    print(args.label, "ms per decoding step (driver + toy LM):", [round(value, 3) for value in per_step])


if __name__ == "__main__":
    script_main(main)
