"""The CPU reproduction of the paper's findings, end to end: experiments, then every figure.

    python experiments/reproduce_cpu.py            # full: about 3.2 hours on 2 cores; resumes when rerun
    python experiments/reproduce_cpu.py --quick    # smoke test: a few minutes (CI runs it)

Steps (each appends or rewrites its own file under the results directory, default
experiments/results/cpu/, or experiments/results/cpu_quick/ with --quick):

  1. main.jsonl, main72.jsonl, alpha.jsonl, nmcmc.jsonl, samplers.jsonl, cap192.jsonl
                                           evaluation runs of experiments/configs/cpu/*.toml on the
                                           arithmetic task with the embedded model (resumable: a
                                           rerun generates only what is missing).  main72 (the
                                           main comparison on 72 problems, which the figures read)
                                           starts from a copy of main.jsonl (its first 24
                                           problems, same settings; fingerprints leave out the
                                           subset) and generates problems 25-72; cap192 is
                                           the main comparison's first 24 problems at T = 192;
  2. cost_scaling.jsonl                    measured tokens and attention positions against the
                                           formulas of METHOD §4 as T and B vary (toy LM);
  3. toy_mixing.jsonl                      TV to p^alpha against tokens, every kernel, several seeds
                                           (exact toy LM);
  4. figures                               `paper_figures/make_all.py` on those results.

`--quick` shrinks every evaluation config (`mcmc_llm.evaluation.smoke_document`: 2 problems,
T = 24, B = 8, at most 2 samples and 2 MH steps per block) and the toy studies; its results are not
the ones docs/results.md reads.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs" / "cpu"
EVALUATIONS = ("main", "main72", "alpha", "nmcmc", "samplers", "cap192")
SEEDS = {"main72": "main"}  # a run that starts from a copy of another's records (the same settings on more problems)


def run_evaluation(name: str, results: Path, quick: bool, lm) -> None:
    from mcmc_llm.evaluation import parse_config, read_document, run_experiment, smoke_document

    document = read_document(CONFIGS / f"{name}.toml")
    if quick:
        document = smoke_document(document)
    document["output"]["path"] = str(results / f"{name}.jsonl")
    seed = results / f"{SEEDS[name]}.jsonl" if name in SEEDS else None
    if seed is not None and seed.exists() and not (results / f"{name}.jsonl").exists():
        shutil.copyfile(seed, results / f"{name}.jsonl")  # resumed: only the problems the seed lacks are generated
        print(f"== {name}: starting from a copy of {seed.name}")
    config = parse_config(document, source=str(CONFIGS / f"{name}.toml"))
    report = run_experiment(config, lm=lm)
    print(f"== {name}: {report.generated} generated, {report.skipped} already there, {report.wall_time_s:.0f} s")
    print(report.table())


def run_script(arguments: list[str]) -> None:
    print("==", " ".join(arguments), flush=True)
    subprocess.run([sys.executable, *arguments], cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (a few minutes)")
    parser.add_argument("--results", type=Path, default=None, help="results directory")
    parser.add_argument("--figures", type=Path, default=None, help="figure directory (default paper_figures/out, or <results>/figures with --quick)")
    parser.add_argument("--skip", nargs="*", default=[], choices=[*EVALUATIONS, "cost", "mixing", "figures"],
                        help="steps to leave out")
    args = parser.parse_args()
    results = args.results or ROOT / "experiments" / "results" / ("cpu_quick" if args.quick else "cpu")
    figures = args.figures or (results / "figures" if args.quick else ROOT / "paper_figures" / "out")
    results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    wanted = [name for name in EVALUATIONS if name not in args.skip]
    if wanted:
        from mcmc_llm.lm.registry import load_model
        from mcmc_llm.lm.threads import configure_threads

        from mcmc_llm.evaluation import read_document

        model = read_document(CONFIGS / "main.toml")["model"]
        configure_threads(model.get("threads"), model.get("device", "auto"))  # [model] threads, else the CPU default
        lm = load_model(model["spec"], device=model.get("device", "auto"), dtype=model.get("dtype", "auto"))
        for name in wanted:
            run_evaluation(name, results, args.quick, lm)
    quick = ["--quick"] if args.quick else []
    if "cost" not in args.skip:
        run_script(["experiments/compute_accounting.py", "--scaling", *quick, "--out", str(results / "cost_scaling.jsonl")])
    if "mixing" not in args.skip:
        run_script(["experiments/toy_mixing.py", *quick, "--out", str(results / "toy_mixing.jsonl")])
    if "figures" not in args.skip:
        run_script(["paper_figures/make_all.py", "--results", str(results), "--out", str(figures)])
    print(f"reproduction finished in {time.perf_counter() - started:.0f} s; results in {results}, figures in {figures}")


if __name__ == "__main__":
    main()
