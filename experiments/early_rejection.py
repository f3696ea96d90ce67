"""Exact early rejection on the embedded model: tokens and wall time per finished power sample, on and off.

The settings of the CPU reproduction's power arm (experiments/configs/cpu/main.toml, cap192.toml):
alpha 4, blocks of 32, N_MCMC = 4, uniform cuts, proposal temperature 1/alpha, continuous batching
with pre-fetch, the arithmetic task (difficulty 1, seed 0) in its default prompt format, bfloat16,
`--chains` samples of each of the first `--problems` problems in one batch, at each cap
`--caps` (96 and 192).  At every cap the run with early rejection off and the run with it on are
made one after the other with the same seed, `--repeats` times (alternating which goes first, so
a change in machine load moves both), and compared:

* tokens per finished sample: every token drawn (`tokens_sampled` + `tokens_discarded`, the
  pre-fetches thrown away included) / samples; and `tokens_rejected_early`;
* wall seconds per finished sample;
* identical chains: the fraction of samples whose tokens are the same on and off (1.0 on toy
  LMs and float64 models, tested; in bfloat16 a batch of other composition may round a log-prob
  differently, so a few chains can part);
* the no-early-reject formula budget of one chain (`power_token_budget` at the observed mean length).

    python experiments/early_rejection.py                 # both caps, 4 problems x 8 chains (~30 min on 2 cores)
    python experiments/early_rejection.py --quick         # T = 96 only, 2 problems x 4 chains

Prints a table, writes `--out` (default experiments/results/early_rejection.jsonl; with --quick, a
new temporary directory outside the repository; one line per cap) and, last, a JSON line.  One
torch thread unless `--threads N` or OMP_NUM_THREADS (`mcmc_llm.lm.threads`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample, power_token_budget
from mcmc_llm.lm.registry import load_model
from mcmc_llm.scripts import quick_output, script_main
from mcmc_llm.tasks.registry import get_task

RESULTS = Path(__file__).parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="bfloat16")
    add_threads_argument(parser)
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--chains", type=int, default=8, help="samples per problem")
    parser.add_argument("--caps", type=int, nargs="+", default=[96, 192])
    parser.add_argument("--repeats", type=int, default=1, help="on/off pairs per cap, seeds S, S+1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="T = 96 only, 2 problems x 4 chains")
    parser.add_argument("--compare-batching", action="store_true",
                        help="also run lock-step chains with early rejection off: how many chains match the continuous "
                             "run in this dtype (the same seed gives the same chains where log-probs do not depend on the batch)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSONL (default experiments/results/early_rejection.jsonl; --quick: a new temporary directory)")
    args = parser.parse_args()
    if args.quick:
        args.caps, args.problems, args.chains = [96], 2, 4
    return args


def main() -> None:
    args = parse_args()
    out = args.out or (quick_output("early_rejection") if args.quick else RESULTS) / "early_rejection.jsonl"
    print(f"results: {out} (written when every cap is done)", flush=True)
    lm = load_model(args.model, device="cpu", dtype=args.dtype, threads=args.threads)
    threads = torch.get_num_threads()
    problems = get_task("arithmetic", difficulty=1).load(subset=args.problems, seed=0)
    prompts = [list(lm.encode_prompt(problem.prompt)) for problem in problems]
    samples = len(prompts) * args.chains
    rows = []
    print(f"{'T':>4} {'early reject':>12} {'tokens/sample':>14} {'rejected early':>15} {'s/sample':>9} {'acceptance':>10}")
    for cap in args.caps:
        config = PowerSamplerConfig(alpha=4.0, block_size=32, max_new_tokens=cap, mcmc_steps=4, cut_rule="uniform")
        totals = {flag: {"tokens": 0, "early": 0, "wall": 0.0, "accepted": 0.0} for flag in (False, True)}
        same = lengths = 0
        for repeat in range(args.repeats):
            seed = args.seed + repeat
            order = (False, True) if repeat % 2 == 0 else (True, False)
            runs = {}
            for flag in order:
                lm.counter.reset()
                started = time.perf_counter()
                runs[flag] = power_sample(lm, prompts, dataclasses.replace(config, early_reject=flag), chains_per_prompt=args.chains, seed=seed)
                wall = time.perf_counter() - started
                print(f"     T={cap} seed {seed} early rejection {'on' if flag else 'off'}: {wall:.0f} s", flush=True)
                compute = runs[flag].compute
                totals[flag]["tokens"] += compute["tokens_sampled"] + compute["tokens_discarded"]
                totals[flag]["early"] += compute["tokens_rejected_early"]
                totals[flag]["wall"] += wall
                totals[flag]["accepted"] += float(runs[flag].trace.acceptance_rate())
            same += sum(a == b for a, b in zip(runs[True].sequences(), runs[False].sequences()))
            lengths += int(runs[False].final.lengths.sum())
        done = samples * args.repeats
        row = {"max_new_tokens": cap, "block_size": 32, "mcmc_steps": 4, "alpha": 4.0, "problems": len(prompts),
               "chains_per_problem": args.chains, "repeats": args.repeats, "dtype": args.dtype, "threads": threads}
        for flag, name in ((False, "off"), (True, "on")):
            t = totals[flag]
            row[f"tokens_per_sample_{name}"] = round(t["tokens"] / done, 1)
            row[f"seconds_per_sample_{name}"] = round(t["wall"] / done, 3)
            row[f"acceptance_{name}"] = round(t["accepted"] / args.repeats, 4)
            print(f"{cap:>4} {name:>12} {t['tokens'] / done:>14.1f} {t['early'] / done:>15.1f} {t['wall'] / done:>9.2f} "
                  f"{t['accepted'] / args.repeats:>10.3f}")
        row["tokens_rejected_early_per_sample"] = round(totals[True]["early"] / done, 1)
        row["token_saving"] = round(1 - totals[True]["tokens"] / totals[False]["tokens"], 4)
        row["wall_saving"] = round(1 - totals[True]["wall"] / totals[False]["wall"], 4)
        row["identical_chains"] = round(same / done, 4)
        row["mean_length"] = round(lengths / done, 1)
        row["formula_tokens_per_sample"] = round(power_token_budget(config, max(lengths / done, 1.0)), 1)
        if args.compare_batching:
            lockstep = power_sample(lm, prompts, dataclasses.replace(config, early_reject=False, batching="lockstep"),
                                    chains_per_prompt=args.chains, seed=args.seed + args.repeats - 1)
            row["lockstep_vs_continuous_identical"] = round(
                sum(a == b for a, b in zip(lockstep.sequences(), runs[False].sequences())) / samples, 4)
            print(f"     lock-step vs continuous, early rejection off: identical chains {row['lockstep_vs_continuous_identical']:.3f}")
        print(f"     saving: tokens {row['token_saving']:.1%}, wall {row['wall_saving']:.1%}; identical chains "
              f"{row['identical_chains']:.3f}; formula (no early rejection, mean length {row['mean_length']}) "
              f"{row['formula_tokens_per_sample']} tokens per sample")
        rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps({"results": str(out), "rows": rows}))


if __name__ == "__main__":
    script_main(main)
