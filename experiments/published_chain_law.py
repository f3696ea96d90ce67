"""Exact output laws of our sampler, the published ratio and the published chain on toy LMs.

For each toy LM and N_MCMC, `mcmc_llm.diagnostics.chain_law` composes the stages' transition
matrices (no sampling), and the table reports each chain's TV distance to p^alpha on S_T and its
mass outside S_T (unterminated sequences shorter than T, which only the published chain reaches).

    python experiments/published_chain_law.py     # seconds; writes experiments/results/published_chain_law.jsonl

The last line printed is a JSON summary; docs/method.md quotes the table.
"""

from __future__ import annotations

import json
from pathlib import Path

from mcmc_llm.diagnostics.chain_law import CHAINS, chain_law
from mcmc_llm.diagnostics.exact import total_variation
from mcmc_llm.lm.exact import power_law
from mcmc_llm.lm.toy import load_toy

SETTINGS = [("tiny", 6, 2), ("bigram", 4, 2), ("trigram", 4, 2), ("derail", 4, 2)]
STEPS = (1, 10, 100)
ALPHA = 4.0
OUT = Path(__file__).parent / "results" / "published_chain_law.jsonl"


def main() -> None:
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
            print(f"{model:>8} {cap:>2} {block:>2} {chain:>10} " + " ".join(f"{c:>20}" for c in cells))
    OUT.write_text("".join(json.dumps(row) + "\n" for row in rows))
    worst = {chain: max(r["tv_power"] for r in rows if r["chain"] == chain and r["mcmc_steps"] == max(STEPS)) for chain in CHAINS}
    print(json.dumps({"max_tv_at_n_100": {k: round(v, 3) for k, v in worst.items()}, "results": str(OUT)}))


if __name__ == "__main__":
    main()
