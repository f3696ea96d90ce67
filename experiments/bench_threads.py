"""Thread-count benchmark for CPU runs: the README's demo workload at 1 and 2 torch threads.

The default thread policy of the CLI and of every script (`mcmc_llm.lm.threads`) was chosen with
this script, so here `--threads` takes the thread counts to compare (each run sets its own).  One
run measures every thread count side by side, interleaved (1, 2, 2, 1, 1, 2, ...), so a change in
machine load during the run moves all of them alike:

  in-process (default): the model is loaded once; each repeat runs `power_sample` with the demo's
      settings (alpha 4, B = 16, T_max = 48, N_MCMC = 2, 2 chains, seed 0) after
      `torch.set_num_threads(n)` and clearing the model's prefix caches;
  --end-to-end: each repeat runs the whole demo command (`mcmc-llm sample ... --threads n`) in a
      fresh process, without OMP_NUM_THREADS, and times it from start to exit (import, model
      load and sampling).

It prints one line per run, then a table (median, min, max seconds; sampled tokens/s) with the
ratio of each thread count's median to 1 thread's, the load average before and after, and
whether another job (`experiments/mixing_study.py`) was running.  The last line is JSON.

    python experiments/bench_threads.py                    # 6 timed runs of the demo, a line as each finishes
    python experiments/bench_threads.py --end-to-end --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from mcmc_llm.scripts import script_main

DEMO_PROMPT = "What is 12 + 30? Answer briefly."
DEMO = dict(alpha=4.0, block_size=16, max_new_tokens=48, mcmc_steps=2, chains=2)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to compare")
    parser.add_argument("--repeats", type=int, default=3, help="runs per thread count")
    parser.add_argument("--end-to-end", action="store_true", help="time the whole CLI command in fresh processes")
    parser.add_argument("--timeout", type=float, default=600.0, help="end-to-end: give up on a run after this many s")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def other_jobs() -> str:
    try:
        found = subprocess.run(["pgrep", "-f", "mixing_study"], capture_output=True, text=True).stdout.split()
    except OSError:
        return "unknown"
    return f"mixing_study running ({len(found)} processes)" if found else "no mixing_study running"


def schedule(threads: list[int], repeats: int) -> list[int]:
    """Interleaved order: forward, backward, forward, ... so no thread count always runs first."""
    order = []
    for repeat in range(repeats):
        order += threads if repeat % 2 == 0 else threads[::-1]
    return order


def in_process(args: argparse.Namespace) -> list[tuple[int, float, int]]:
    import torch

    from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
    from mcmc_llm.lm.registry import load_model

    torch.set_num_threads(1)
    lm = load_model(args.model, device="cpu")
    prompt = lm.encode_prompt(DEMO_PROMPT)
    config = PowerSamplerConfig(alpha=DEMO["alpha"], block_size=DEMO["block_size"],
                                max_new_tokens=DEMO["max_new_tokens"], mcmc_steps=DEMO["mcmc_steps"])
    power_sample(lm, [prompt], PowerSamplerConfig(alpha=4.0, block_size=4, max_new_tokens=4, mcmc_steps=1),
                 chains_per_prompt=1, seed=0)  # warm-up
    runs = []
    for threads in schedule(args.threads, args.repeats):
        torch.set_num_threads(threads)
        if hasattr(lm, "clear_prefixes"):
            lm.clear_prefixes()
        started = time.perf_counter()
        result = power_sample(lm, [prompt], config, chains_per_prompt=DEMO["chains"], seed=args.seed)
        wall = time.perf_counter() - started
        tokens = int(result.compute["tokens_sampled"])
        print(f"threads {threads}: {wall:7.2f} s, {tokens} tokens sampled, {tokens / wall:7.1f} tok/s", flush=True)
        runs.append((threads, wall, tokens))
    return runs


def end_to_end(args: argparse.Namespace) -> list[tuple[int, float, int]]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    runs = []
    for threads in schedule(args.threads, args.repeats):
        command = [sys.executable, "-m", "mcmc_llm.cli", "sample", "--prompt", DEMO_PROMPT,
                   "--max-new-tokens", str(DEMO["max_new_tokens"]), "--block-size", str(DEMO["block_size"]),
                   "--mcmc-steps", str(DEMO["mcmc_steps"]), "--chains", str(DEMO["chains"]), "--seed", str(args.seed),
                   "--threads", str(threads), "--quiet"]
        if args.model:
            command += ["--model", args.model]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
            wall = time.perf_counter() - started
            ok = done.returncode == 0
        except subprocess.TimeoutExpired:
            wall, ok = float("inf"), False
        note = "" if ok else " (FAILED or timed out)"
        print(f"threads {threads}: {wall:7.2f} s end to end{note}", flush=True)
        runs.append((threads, wall, 0))
    return runs


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    jobs = other_jobs()
    print(f"cores {os.cpu_count()}, load average {load_before[0]:.2f}, {jobs}; "
          f"{'end to end' if args.end_to_end else 'in-process sampling'}, {args.repeats} repeats", flush=True)
    runs = end_to_end(args) if args.end_to_end else in_process(args)
    load_after = os.getloadavg()
    medians = {}
    print(f"\n{'threads':>7}  {'median s':>9}  {'min s':>7}  {'max s':>7}  {'tok/s (median)':>14}  {'vs 1 thread':>11}")
    for threads in args.threads:
        walls = [w for t, w, _ in runs if t == threads]
        tokens = [k for t, _, k in runs if t == threads]
        medians[threads] = statistics.median(walls)
        rate = statistics.median(k / w for k, w in zip(tokens, walls)) if any(tokens) else float("nan")
        base = medians.get(args.threads[0])
        rate_text = f"{rate:14.1f}" if rate == rate else f"{'-':>14}"
        print(f"{threads:>7}  {medians[threads]:9.2f}  {min(walls):7.2f}  {max(walls):7.2f}  {rate_text}  "
              f"{medians[threads] / base:10.2f}x")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {other_jobs()}")
    print(json.dumps({"mode": "end_to_end" if args.end_to_end else "in_process", "jobs": jobs,
                      "load_before": round(load_before[0], 2), "load_after": round(load_after[0], 2),
                      "median_s": {str(t): round(m, 3) for t, m in medians.items()},
                      "runs": [{"threads": t, "wall_s": round(w, 3), "tokens": k} for t, w, k in runs]}))


if __name__ == "__main__":
    script_main(main)
