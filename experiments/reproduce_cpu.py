"""The CPU reproduction of the paper's findings, end to end: experiments, then every figure.

    python experiments/reproduce_cpu.py            # full: about 6 hours on 2 cores; resumes when rerun
    python experiments/reproduce_cpu.py --quick    # smoke test (CI runs it)

Steps (each appends or rewrites its own file under the results directory `--results`, default
experiments/results/cpu/, or with --quick a new temporary directory outside the repository; the
first line printed names it):

  1. main.jsonl, main72.jsonl, alpha.jsonl, nmcmc.jsonl, samplers.jsonl, cap192.jsonl,
     primary_pilot.jsonl, primary.jsonl, multistep_pilot.jsonl, multistep.jsonl
                                           evaluation runs of experiments/configs/cpu/*.toml on the
                                           arithmetic task with the embedded model (resumable: a
                                           rerun generates only what is missing).  main72 (the
                                           main comparison on 72 problems, which the figures read)
                                           starts from a copy of main.jsonl (its first 24
                                           problems, same settings; fingerprints leave out the
                                           subset) and generates problems 25-72; cap192 is
                                           the main comparison's first 24 problems at T = 192;
                                           primary_pilot and primary are the pre-registered
                                           test (docs/results.md): its length pilot and its run;
                                           multistep_pilot and multistep the pre-registered
                                           multi-step test, likewise;
  2. cost_scaling.jsonl                    measured tokens and attention positions against the
                                           formulas of METHOD §4 as T and B vary (toy LM);
  3. toy_mixing.jsonl                      TV to p^alpha against tokens, every kernel, several seeds
                                           (exact toy LM);
  4. figures                               `paper_figures/make_all.py` on those results.

`--quick` shrinks every evaluation config (`mcmc_llm.evaluation.smoke_document`: 2 problems,
T = 24, B = 8, at most 2 samples and 2 MH steps per block) and the toy studies; its results are not
the ones docs/results.md reads.

Threads (`mcmc_llm.lm.threads`): `--threads N` for every step; without it, each evaluation uses its
config's `[model] threads` (as `mcmc-llm run` does) and the toy steps the CPU default (1 thread
unless OMP_NUM_THREADS).  Ctrl-C keeps what every step has written; rerunning with the same
`--results` resumes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.scripts import keeping, quick_output, script_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs" / "cpu"
EVALUATIONS = ("main", "main72", "alpha", "nmcmc", "samplers", "cap192", "primary_pilot", "primary", "multistep_pilot",
               "multistep")
SEEDS = {"main72": "main"}  # a run that starts from a copy of another's records (the same settings on more problems)


def run_evaluation(name: str, results: Path, quick: bool, lm, threads: int | None) -> None:
    from mcmc_llm.evaluation import parse_config, read_document, run_experiment, smoke_document

    document = read_document(CONFIGS / f"{name}.toml")
    if quick:
        document = smoke_document(document)
    document["output"]["path"] = str(results / f"{name}.jsonl")
    if threads is not None:
        document["model"]["threads"] = threads
    seed = results / f"{SEEDS[name]}.jsonl" if name in SEEDS else None
    if seed is not None and seed.exists() and not (results / f"{name}.jsonl").exists():
        shutil.copyfile(seed, results / f"{name}.jsonl")  # resumed: only the problems the seed lacks are generated
        print(f"== {name}: starting from a copy of {seed.name}")
    config = parse_config(document, source=str(CONFIGS / f"{name}.toml"))
    print(f"== {name}: {config.output.path}", flush=True)
    report = run_experiment(config, lm=lm, progress=True)  # a bar per sample on stderr, terminal or log
    print(f"== {name}: {report.generated} generated, {report.skipped} already there, {report.wall_time_s:.0f} s")
    print(report.table())


def run_script(arguments: list[str]) -> None:
    print("==", " ".join(arguments), flush=True)
    subprocess.run([sys.executable, *arguments], cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes")
    parser.add_argument("--results", type=Path, default=None,
                        help="results directory (default experiments/results/cpu; --quick: a new temporary directory)")
    parser.add_argument("--figures", type=Path, default=None, help="figure directory (default paper_figures/out, or <results>/figures with --quick)")
    parser.add_argument("--skip", nargs="*", default=[], choices=[*EVALUATIONS, "cost", "mixing", "figures"],
                        help="steps to leave out")
    add_threads_argument(parser, default_text="each config's [model] threads, 1 for the toy steps")
    args = parser.parse_args()
    results = args.results or (quick_output("reproduce_cpu") if args.quick else ROOT / "experiments" / "results" / "cpu")
    figures = args.figures or (results / "figures" if args.quick else ROOT / "paper_figures" / "out")
    results.mkdir(parents=True, exist_ok=True)
    print(f"results: {results}; figures: {figures}")
    with keeping(results, f"rerun with --results {results} to resume"):
        reproduce(args, results, figures)


def reproduce(args: argparse.Namespace, results: Path, figures: Path) -> None:
    """The steps of the module docstring, in order, each skipped when named in `--skip`."""
    started = time.perf_counter()

    wanted = [name for name in EVALUATIONS if name not in args.skip]
    if wanted:
        from mcmc_llm.evaluation import read_document
        from mcmc_llm.lm.registry import load_model

        model = read_document(CONFIGS / "main.toml")["model"]
        lm = load_model(model["spec"], device=model.get("device", "auto"), dtype=model.get("dtype", "auto"),
                        threads=args.threads or model.get("threads"))
        for name in wanted:
            run_evaluation(name, results, args.quick, lm, args.threads)
    quick = ["--quick"] if args.quick else []
    quick += ["--threads", str(args.threads)] if args.threads else []
    if "cost" not in args.skip:
        run_script(["experiments/compute_accounting.py", "--scaling", *quick, "--out", str(results / "cost_scaling.jsonl")])
    if "mixing" not in args.skip:
        run_script(["experiments/toy_mixing.py", *quick, "--out", str(results / "toy_mixing.jsonl")])
    if "figures" not in args.skip:
        run_script(["paper_figures/make_all.py", "--results", str(results), "--out", str(figures)])
    print(f"reproduction finished in {time.perf_counter() - started:.0f} s; results in {results}, figures in {figures}")


if __name__ == "__main__":
    script_main(main)
