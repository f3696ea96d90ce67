"""Exact output laws of our sampler, the published ratio and the published chain on toy LMs.

For each toy LM and N_MCMC, `mcmc_llm.diagnostics.chain_law` composes the stages' transition
matrices (no sampling), and the table reports each chain's TV distance to p^alpha on S_T and its
mass outside S_T (unterminated sequences shorter than T, which only the published chain reaches).

    python experiments/published_chain_law.py     # seconds; writes experiments/results/published_chain_law.jsonl

The last line printed is a JSON summary; docs/method.md quotes the table.  One torch thread unless
`--threads N` or OMP_NUM_THREADS (`mcmc_llm.lm.threads`); `--out` writes the rows elsewhere.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.diagnostics.chain_law import CHAINS, chain_law
from mcmc_llm.diagnostics.exact import total_variation
from mcmc_llm.lm.exact import power_law
from mcmc_llm.lm.threads import configure_threads
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.scripts import script_main

SETTINGS = [("tiny", 6, 2), ("bigram", 4, 2), ("trigram", 4, 2), ("derail", 4, 2)]
STEPS = (1, 10, 100)
ALPHA = 4.0
OUT = Path(__file__).parent / "results" / "published_chain_law.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help=f"results JSONL (default {OUT.relative_to(OUT.parents[2])})")
    add_threads_argument(parser)
    args = parser.parse_args()
    configure_threads(args.threads, "cpu")
    rows = []
    print(f"{'model':>8} {'T':>2} {'B':>2} {'chain':>10} " + " ".join(f"{'N=' + str(n) + ' TV, outside':>20}" for n in STEPS))
    for model, cap, block in SETTINGS:
        lm = load_toy(model)
        target = power_law(lm, cap, ALPHA).as_dict()
        for chain in CHAINS:
            cells = []
            for steps in STEPS:
                law = chain_law(lm, alpha=ALPHA, block_size=block, max_new_tokens=cap, mcmc_steps=steps, chain=chain)
                outside = sum(mass for sequence, mass in law.items() if sequence not in target)
                row = {"model": f"toy:{model}", "max_new_tokens": cap, "block_size": block, "alpha": ALPHA, "chain": chain,
                       "mcmc_steps": steps, "tv_power": total_variation(law, target), "mass_outside_s_n": outside}
                rows.append(row)
                cells.append(f"{row['tv_power']:>10.3f}, {outside:>8.3f}")
            print(f"{model:>8} {cap:>2} {block:>2} {chain:>10} " + " ".join(f"{c:>20}" for c in cells), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    worst = {chain: max(r["tv_power"] for r in rows if r["chain"] == chain and r["mcmc_steps"] == max(STEPS)) for chain in CHAINS}
    print(json.dumps({"max_tv_at_n_100": {k: round(v, 3) for k, v in worst.items()}, "results": str(args.out)}))


if __name__ == "__main__":
    script_main(main)
