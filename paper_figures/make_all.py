"""Regenerate every figure from existing results (no sampling):

    python paper_figures/make_all.py [--results DIR] [--out DIR]

DIR defaults: experiments/results/cpu and paper_figures/out.  Runs each figure script in turn
(each prints the numbers it plots; first the pre-registered tests when DIR/primary.jsonl and
DIR/multistep.jsonl exist), then the toy-LM figures: the mixing study (from
DIR/toy_mixing.jsonl), the sampler comparison of the SMC issue (from
experiments/results/compare_samplers.jsonl) and the mixing study on SmolLM2 (DIR/mixing/, when
present: `experiments/mixing_study.py` is not part of `reproduce_cpu.py`).  Exits non-zero if any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from mcmc_llm.scripts import script_main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPTS = ("cpu_accuracy.py", "pass_at_k.py", "likelihood_confidence.py", "ablations.py", "acceptance.py", "cost_scaling.py",
           "samplers_accuracy.py", "strict_grading.py", "compute_matched.py", "paired_tests.py", "two_caps.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results" / "cpu")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    jobs = [[script, "--results", str(args.results), "--out", str(args.out)] for script in SCRIPTS]
    tests = 0
    for study in ("primary", "multistep"):  # the pre-registered tests (docs/results.md) run on their own, first
        if (args.results / f"{study}.jsonl").exists():
            tests += 1
            jobs.insert(tests - 1, ["primary.py", "--study", study, "--results", str(args.results), "--out", str(args.out)])
        else:
            print(f"skipping primary.py --study {study}: no {args.results / (study + '.jsonl')} "
                  f"(mcmc-llm run experiments/configs/cpu/{study}.toml)")
    jobs.append(["toy_mixing.py", "--results", str(args.results / "toy_mixing.jsonl"), "--out", str(args.out / "toy_mixing_tv.png")])
    jobs.append(["compare_samplers.py", "--out", str(args.out / "compare_samplers.png")])
    if (args.results / "mixing" / "reference.jsonl").exists():  # the mixing study runs on its own (~2 hours)
        jobs.append(["mixing_study.py", "--results", str(args.results / "mixing"), "--out", str(args.out / "mixing_study.png")])
    else:
        print(f"skipping mixing_study.py: no {args.results / 'mixing'} (run experiments/mixing_study.py)")
    failed = []
    for job in jobs:
        print(f"== {job[0]}", flush=True)
        if subprocess.run([sys.executable, str(HERE / job[0]), *job[1:]], cwd=ROOT).returncode != 0:
            failed.append(job[0])
    if failed:
        raise SystemExit(f"figure scripts failed: {', '.join(failed)}")
    print(f"all {len(jobs)} figure scripts done; PNGs in {args.out}")


if __name__ == "__main__":
    script_main(main)
