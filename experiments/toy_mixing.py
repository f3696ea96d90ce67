"""Mixing study on an exact toy LM: TV to p^alpha against MH steps and tokens, for every kernel.

For each kernel (uniform, within-block, restart, priority, entropy, the published code's
biased ratio inside our chain, and the copy of the published code's whole chain) and each N_MCMC, Algorithm 1 runs C independent chains; the empirical law of their
final sequences is compared with the exact p^alpha on S_{T_max} (and, for within-block cuts,
with the exact nested law they target).  Several seeds give the spread.  Tokens are the
proposal LM's sampled tokens per chain (extensions + resampled suffixes).

    python experiments/toy_mixing.py            # full study (a few minutes on 2 cores)
    python experiments/toy_mixing.py --quick    # smoke version (seconds)

Results are appended to `--out` (default experiments/results/cpu/toy_mixing.jsonl; with --quick, a
new temporary directory outside the repository) as each run completes; a rerun with the same
`--out` skips runs already recorded, and Ctrl-C keeps what is written.  The first line names the
results file, the last line printed is a JSON summary.  One torch thread unless `--threads N` or
OMP_NUM_THREADS (`mcmc_llm.lm.threads`).
`python paper_figures/toy_mixing.py` draws the figure from the results file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.diagnostics.exact import count_states, total_variation, tv_noise_floor
from mcmc_llm.lm.exact import nested_law, power_law
from mcmc_llm.lm.threads import configure_threads
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.scripts import keeping, quick_output, script_main
from resume import completed_keys  # sibling module: experiments/resume.py

KERNELS = [
    ("uniform", "uniform", "exact"),
    ("within-block", "within-block", "exact"),
    ("restart", "restart", "exact"),
    ("priority", "priority", "exact"),
    ("entropy", "entropy", "exact"),
    ("published ratio", "uniform", "published"),
    ("published chain", "uniform", "reference"),
]
RESULTS = Path(__file__).parent / "results"
FULL = {"chains": 4000, "steps": [0, 1, 2, 4, 8, 16, 32], "seeds": 3}
QUICK = {"chains": 1000, "steps": [0, 2, 8], "seeds": 2}  # settings a flag does not give


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="derail", help="toy model name (see mcmc_llm.lm.toy.TOY_MODELS)")
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--block-size", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=4.0)
    parser.add_argument("--chains", type=int, default=None, help=f"default {FULL['chains']} ({QUICK['chains']} with --quick)")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help=f"N_MCMC values (default {FULL['steps']})")
    parser.add_argument("--seeds", type=int, default=None, help=f"default {FULL['seeds']} ({QUICK['seeds']} with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"small settings for a smoke test: {QUICK}")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSONL (default experiments/results/cpu/toy_mixing.jsonl; --quick: a new temporary directory)")
    add_threads_argument(parser)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = quick_output("toy_mixing") / "toy_mixing.jsonl" if args.quick else RESULTS / "cpu" / "toy_mixing.jsonl"
    return args


def main() -> None:
    args = parse_args()
    threads = configure_threads(args.threads, "cpu")
    lm = load_toy(args.model)
    target = power_law(lm, args.max_new_tokens, args.alpha)
    nested = nested_law(lm, args.max_new_tokens, args.alpha, args.block_size)
    exact, exact_nested = target.as_dict(), nested.as_dict()
    floor = tv_noise_floor(exact, args.chains)
    done = completed_keys(args.out, ("kernel", "mcmc_steps", "seed"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"results: {args.out}", flush=True)
    print(f"model toy:{args.model}, T_max={args.max_new_tokens}, B={args.block_size}, alpha={args.alpha}, "
          f"{args.chains} chains, |S_n|={len(target)}, TV of {args.chains} exact draws ~ {floor:.4f}")
    print(f"{'kernel':>16} {'N_MCMC':>6} {'seed':>4} {'tokens/chain':>12} {'TV(p^a)':>8} {'TV(nested)':>10} {'accept':>6}")
    with keeping(args.out, f"rerun with --out {args.out} to resume"), args.out.open("a") as handle:
        for label, kernel, ratio in KERNELS:
            for steps in args.steps:
                for seed in range(args.seeds):
                    if (label, steps, seed) in done:
                        continue
                    config = PowerSamplerConfig(alpha=args.alpha, block_size=args.block_size,
                                                max_new_tokens=args.max_new_tokens, mcmc_steps=steps,
                                                cut_rule=kernel, ratio=ratio)
                    started = time.perf_counter()
                    result = power_sample(lm, [[]], config, chains_per_prompt=args.chains, seed=1000 * seed + steps)
                    samples = count_states(tuple(s) for s in result.sequences())
                    row = {
                        "kernel": label, "cut_rule": kernel, "ratio": ratio, "mcmc_steps": steps, "seed": seed,
                        "model": f"toy:{args.model}", "alpha": args.alpha, "block_size": args.block_size,
                        "max_new_tokens": args.max_new_tokens, "chains": args.chains,
                        "tokens_per_chain": result.compute["tokens_sampled"] / args.chains,
                        "attention_positions_per_chain": result.compute["attention_positions"] / args.chains,
                        "tv_power": total_variation(samples, exact),
                        "tv_nested": total_variation(samples, exact_nested),
                        "acceptance": result.trace.acceptance_rate() if result.trace is not None else None,
                        "noise_floor": floor, "wall_s": time.perf_counter() - started,
                    }
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    print(f"{label:>16} {steps:>6} {seed:>4} {row['tokens_per_chain']:>12.1f} {row['tv_power']:>8.4f} "
                          f"{row['tv_nested']:>10.4f} {row['acceptance'] if row['acceptance'] is not None else float('nan'):>6.3f}",
                          flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    largest = max(args.steps)
    final = {}
    for label, _, _ in KERNELS:
        values = [r["tv_power"] for r in rows if r["kernel"] == label and r["mcmc_steps"] == largest]
        final[label] = round(float(np.mean(values)), 4) if values else None
    print(json.dumps({"tv_power_at_max_steps": final, "max_steps": largest, "noise_floor": round(floor, 4),
                      "results": str(args.out), "threads": threads}))


if __name__ == "__main__":
    script_main(main)
