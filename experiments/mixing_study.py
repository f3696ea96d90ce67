"""Mixing study on the embedded real model: how far is block MH from p^alpha at a given N_MCMC?

SmolLM2-135M-Instruct (the embedded Q4_1 GGUF, dequantised; bfloat16 on CPU), alpha = 4, T = 48,
B = 16 (3 blocks), proposal temperature 1/alpha, the first 8 seeded arithmetic problems of the
CPU reproduction (difficulty 1, seed 0).  Four phases, each appended to its own JSONL file in
`experiments/results/cpu/mixing/` as each run completes (a rerun skips what is there):

* `reference`: Power-SMC without rejuvenation, P = 128 particles, R = 4 independent runs per
  problem and batch (`--reference-batches K`: 4K runs).  Every particle is stored (log weight,
  length, EOS, log p, answers), so the reference expectations E_{p^alpha}[f] (pooled over runs
  with weights Z_hat_r W^i, bias O(1/(R P))) and their error bars (across runs) recompute from
  the file.
* `mcmc`: Algorithm 1 with each kernel (five cut rules with the exact ratio, the published
  ratio inside our chain, and the faithful copy of the published chain) at N_MCMC in
  {1, 3, 10}, and 32 for uniform cuts and the published chain (`mcmc-extra`: N = 32 for the
  other kernels, into `mcmc_extra.jsonl`); C = 8 chains per problem, seed 0 for every kernel,
  so chain (problem, c) has the same random streams under every kernel (common random numbers).
* `smc`: Power-SMC with P = 4 and 16 particles, 8 runs per problem: each run's weighted
  estimates, and one SIR draw per run.
* `accuracy`: problems 8..23 of the same set (the main comparison's 24 problems with the
  `mcmc` phase's first 8), exact ratio / published ratio / published chain at N_MCMC = 10,
  4 chains each, shared seeds: accuracy, length, EOS rate and log p, paired.

    python experiments/mixing_study.py --phase reference      # ~45 min on one core
    python experiments/mixing_study.py --phase mcmc           # ~100 min on one core
    python experiments/mixing_study.py --phase mcmc-extra     # ~90 min on one core
    python experiments/mixing_study.py --phase smc
    python experiments/mixing_study.py --phase accuracy
    python experiments/mixing_study.py --quick --phase all     # a smoke run (tiny settings)

Results go to `--out` (default experiments/results/cpu/mixing/; with --quick, a new temporary
directory outside the repository); Ctrl-C keeps what is written, and a rerun with the same `--out`
resumes.  Each phase uses one torch thread (unless `--threads N` or OMP_NUM_THREADS), so two phases
can run side by side on two cores.
`python paper_figures/mixing_study.py` computes every number in docs/results.md from the files
and draws the figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.lm.registry import load_model
from mcmc_llm.scripts import keeping, quick_output, script_main
from mcmc_llm.smc.power_smc import SMCConfig, power_smc
from mcmc_llm.tasks.arithmetic import ArithmeticTask, extract_integer
from resume import completed_keys  # sibling module: experiments/resume.py
from toy_mixing import KERNELS  # (label, cut rule, ratio): the kernels of the toy study

RESULTS = Path(__file__).parent / "results" / "cpu" / "mixing"
#: (N_MCMC, kernels) in the order they run: the headline N = 10 first.  `--phase mcmc` runs
#: MCMC_GRID into mcmc.jsonl; `--phase mcmc-extra` (a second worker, once a core is free) runs
#: the remaining N = 32 cells into mcmc_extra.jsonl.
MCMC_GRID = [(10, None), (1, None), (3, None), (32, ("uniform", "published chain"))]
EXTRA_GRID = [(32, ("within-block",)), (32, ("published ratio",)), (32, ("priority",)), (32, ("entropy",)),
              (32, ("restart",))]
ACCURACY_KERNELS = ("uniform", "published ratio", "published chain")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("reference", "mcmc", "mcmc-extra", "smc", "accuracy", "all"), required=True)
    parser.add_argument("--quick", action="store_true", help="tiny settings, written to a new temporary directory")
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default experiments/results/cpu/mixing; --quick: a new temporary directory)")
    add_threads_argument(parser)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--reference-batches", type=int, default=1,
                        help="reference: batches of R independent SMC runs per problem (more batches: a tighter reference)")
    args = parser.parse_args()
    settings = dict(problems=8, extra_problems=16, max_new_tokens=48, block_size=16, alpha=4.0, chains=8,
                    accuracy_chains=4, particles=128, runs=4, small_particles=(4, 16), small_runs=8)
    if args.quick:
        settings.update(problems=2, extra_problems=1, max_new_tokens=8, block_size=4, chains=2, accuracy_chains=2,
                        particles=8, runs=2, small_particles=(2,), small_runs=2)
    args.settings = settings
    if args.out is None:
        args.out = quick_output("mixing_study") if args.quick else RESULTS
    return args


def graded(task, problem, lm, tokens: list[int]) -> dict:
    """Answers under lenient grading (last number as fallback) and strict grading."""
    text = lm.decode(tokens)
    answer = problem.reference["answer"]
    lenient, _ = extract_integer(text, True)
    strict, _ = extract_integer(text, False)
    return {"answer": lenient, "correct": lenient == answer, "answer_strict": strict, "correct_strict": strict == answer}


def sequence_record(task, problem, lm, batch, row: int) -> dict:
    tokens = batch.generated_tokens().to_lists()[row]
    length = int(batch.lengths[row])
    log_p = float(batch.total_log_p()[row])
    return {"length": length, "ended": bool(batch.ended[row]), "log_p": log_p,
            "log_p_per_token": log_p / max(length, 1), **graded(task, problem, lm, tokens)}


def _rows(path: Path) -> list[dict]:
    """The complete rows of a JSONL results file (a torn last line is skipped)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append(path: Path, rows: list[dict]) -> None:
    with path.open("a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def run_reference(args, lm, task, problems) -> None:
    """`--reference-batches` batches of R runs per problem (batch b's runs are numbered b R .. b R + R - 1)."""
    s, path = args.settings, args.out / "reference.jsonl"
    done = {(row["problem"], row.get("batch", 0)) for row in _rows(path)}
    config = SMCConfig(alpha=s["alpha"], max_new_tokens=s["max_new_tokens"], num_particles=s["particles"])
    for batch, (index, problem) in itertools.product(range(args.reference_batches), enumerate(problems[: s["problems"]])):
        if (index, batch) in done:
            continue
        started = time.perf_counter()
        prompt = lm.encode_prompt(problem.prompt)
        result = power_smc(lm, [prompt] * s["runs"], config, seed=1000 + index + 100 * batch)
        rows = []
        for run in range(s["runs"]):
            for particle in range(s["particles"]):
                row = run * s["particles"] + particle
                rows.append({"problem": index, "batch": batch, "run": batch * s["runs"] + run, "particle": particle,
                             "log_weight": float(result.log_weights[run, particle]),
                             "log_z_hat": float(result.log_normalizer[run]),
                             **sequence_record(task, problem, lm, result.particles, row)})
        for row in rows:
            row["tokens_sampled"] = result.compute["tokens_sampled"] / s["runs"]  # per run
            row["wall_s"] = time.perf_counter() - started
        append(path, rows)
        print(f"reference problem {index}: log Z_hat {result.log_normalizer.tolist()}, "
              f"final ESS {result.diagnostics['final_ess'].round(1).tolist()}, {time.perf_counter() - started:.0f}s", flush=True)


def run_mcmc(args, lm, task, problems, *, path: Path, grid, chains: int, key_offset: int = 0) -> None:
    s = args.settings
    done = completed_keys(path, ("kernel", "mcmc_steps"))
    prompts = [lm.encode_prompt(problem.prompt) for problem in problems]
    for steps, names in grid:
        for label, cut_rule, ratio in KERNELS:
            if (names is not None and label not in names) or (label, steps) in done:
                continue
            done.add((label, steps))
            config = PowerSamplerConfig(alpha=s["alpha"], block_size=s["block_size"], max_new_tokens=s["max_new_tokens"],
                                        mcmc_steps=steps, cut_rule=cut_rule, ratio=ratio)
            started = time.perf_counter()
            result = power_sample(lm, prompts, config, chains_per_prompt=chains, seed=0)
            wall = time.perf_counter() - started
            trace = result.trace
            tokens = (trace.stats["tokens_resampled"].sum(1) + trace.stats["extension_tokens"].sum(1)).tolist()
            accepted = trace.stats["accepted"]
            active = trace.stats.get("active")
            rows = []
            for row in range(len(prompts) * chains):
                problem_index, chain = divmod(row, chains)
                cells = active[row] if active is not None else slice(None)
                rows.append({
                    "kernel": label, "cut_rule": cut_rule, "ratio": ratio, "mcmc_steps": steps,
                    "problem": problem_index + key_offset, "chain": chain, "tokens_sampled": int(tokens[row]),
                    "acceptance": float(accepted[row][cells].mean()) if accepted[row][cells].size else None,
                    "wall_s": wall, **sequence_record(task, problems[problem_index], lm, result.final, row),
                })
            append(path, rows)
            print(f"{label:>16} N={steps:<3} tokens/chain {sum(tokens) / len(tokens):7.1f}  EOS "
                  f"{sum(r['ended'] for r in rows) / len(rows):.2f}  acc {sum(r['correct'] for r in rows) / len(rows):.2f}  "
                  f"{wall:.0f}s", flush=True)


def run_small_smc(args, lm, task, problems) -> None:
    s, path = args.settings, args.out / "smc.jsonl"
    done = completed_keys(path, ("particles", "problem"))
    for particles in s["small_particles"]:
        config = SMCConfig(alpha=s["alpha"], max_new_tokens=s["max_new_tokens"], num_particles=particles)
        for index, problem in enumerate(problems[: s["problems"]]):
            if (particles, index) in done:
                continue
            prompt = lm.encode_prompt(problem.prompt)
            result = power_smc(lm, [prompt] * s["small_runs"], config, seed=2000 + 100 * particles + index)
            draws = result.draw_indices(torch.Generator().manual_seed(3000 + index), 1).reshape(-1).tolist()
            weights = result.weights()
            rows = []
            for run in range(s["small_runs"]):
                members = [sequence_record(task, problem, lm, result.particles, run * particles + i) for i in range(particles)]
                weighted = {name: sum(float(weights[run, i]) * float(m[name]) for i, m in enumerate(members))
                            for name in ("log_p_per_token", "length", "ended", "correct", "correct_strict")}
                rows.append({"particles": particles, "problem": index, "run": run,
                             "log_z_hat": float(result.log_normalizer[run]),
                             "tokens_sampled": result.compute["tokens_sampled"] / s["small_runs"],
                             "weighted": weighted, "draw": members[draws[run] - run * particles]})
            append(path, rows)
            print(f"smc P={particles} problem {index}: done", flush=True)


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"results: {args.out}", flush=True)
    s = args.settings
    lm = load_model("default", device="cpu", dtype=args.dtype, threads=args.threads)
    task = ArithmeticTask(difficulty=1)
    problems = task.load(subset=s["problems"] + s["extra_problems"], seed=0)
    phases = ("reference", "mcmc", "mcmc-extra", "smc", "accuracy") if args.phase == "all" else (args.phase,)
    with keeping(args.out, f"rerun with --out {args.out} to resume"):
        run_phases(args, phases, lm, task, problems)
    print(json.dumps({"phases": list(phases), "results": str(args.out)}))


def run_phases(args, phases, lm, task, problems) -> None:
    s = args.settings
    for phase in phases:
        if phase == "reference":
            run_reference(args, lm, task, problems)
        elif phase == "mcmc":
            run_mcmc(args, lm, task, problems[: s["problems"]], path=args.out / "mcmc.jsonl", grid=MCMC_GRID,
                     chains=s["chains"])
        elif phase == "mcmc-extra":
            run_mcmc(args, lm, task, problems[: s["problems"]], path=args.out / "mcmc_extra.jsonl", grid=EXTRA_GRID,
                     chains=s["chains"])
        elif phase == "smc":
            run_small_smc(args, lm, task, problems)
        else:
            run_mcmc(args, lm, task, problems[s["problems"]:], path=args.out / "accuracy.jsonl",
                     grid=[(10, ACCURACY_KERNELS)], chains=s["accuracy_chains"], key_offset=s["problems"])


if __name__ == "__main__":
    script_main(main)
