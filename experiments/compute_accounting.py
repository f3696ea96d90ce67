"""Measured compute of the power sampler against the cost formulas of METHOD §4.

A toy LM whose EOS probability is ~0 makes every sequence run to the cap, so the formulas apply
exactly.  For uniform and within-block cuts, several (T_max, B) and N_MCMC, we measure per chain:
tokens sampled, tokens encoded (prefill + decode) and the attention-position sum, and compare with

  METHOD §4 approximations      uniform:      N T^2 / (4B) + T
                                within-block: N T / 2 + T
  exact expectations (no EOS)   uniform:      T + N sum_k (L_k + 1) / 2,        L_k = kB
                                within-block: T + N K (B + 1) / 2
  The formulas count every proposal decoded to its end, so the measurement runs with early
  rejection off; the same chains with early rejection on (the default: identical chains, checked
  here) are measured beside it, and `tokens_early_reject` / `saving` report what it spends less.
  attention positions of sampled tokens (prompt length P, token at absolute position j costs j + 1):
                                uniform:      sum over extensions + N sum_k [ (L_k+1)/2 P + (L_k+1)(2L_k+1)/6 ]
                                within-block: ... + N sum_k E_m sum_{i=m}^{L_k-1} (P + i + 1), m uniform in block k

    python experiments/compute_accounting.py [--quick]        # the table of docs/performance.md
    python experiments/compute_accounting.py --scaling [--quick]   # T in 32..256 x B in 16..64, N = 2 (~1 min)

Prints a table and, last, a JSON line; writes experiments/results/compute_accounting.jsonl (or
cost_scaling.jsonl with --scaling; with --quick, into a new temporary directory outside the
repository; `--out` to choose).  One torch thread unless `--threads N` or OMP_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.lm.threads import configure_threads
from mcmc_llm.lm.toy import NgramLM
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample, power_token_budget
from mcmc_llm.scripts import quick_output, script_main

RESULTS = Path(__file__).parent / "results"


def expected_tokens(kernel: str, T: int, B: int, N: int) -> float:
    """Exact expected tokens per chain with no EOS: the library's `power_token_budget` (one formula)."""
    return power_token_budget(PowerSamplerConfig(alpha=4.0, block_size=B, max_new_tokens=T, mcmc_steps=N, cut_rule=kernel))


def expected_attention(kernel: str, T: int, B: int, N: int, P: int) -> float:
    """Sum over sampled tokens of (absolute position + 1), prompt of length P."""
    K = -(-T // B)
    total = sum(P + i + 1 for i in range(T))  # the extensions sample every position once
    for k in range(K):
        L = min((k + 1) * B, T)
        low = 0 if kernel == "uniform" else k * B
        cuts = range(low, L)
        total += N * sum(sum(P + i + 1 for i in range(m, L)) for m in cuts) / len(cuts)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scaling", action="store_true", help="the (T, B) grid of the cost-scaling figure")
    parser.add_argument("--chains", type=int, default=None, help="chains per setting (default 200; 64 with --scaling)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSONL (default experiments/results/NAME.jsonl; --quick: a new temporary directory)")
    add_threads_argument(parser)
    args = parser.parse_args()
    configure_threads(args.threads, "cpu")
    lm = NgramLM.random(8, 2, seed=0, eos_logit=-30.0)
    prompt = [1, 2, 3, 4]
    if args.scaling:
        lengths = (32, 64) if args.quick else (32, 64, 128, 256)
        grid = [(T, B, 2) for T in lengths for B in (16, 32, 64) if B < T]
        args.chains = args.chains or (16 if args.quick else 200)
    else:
        grid = [(64, 16, 4), (128, 32, 4), (256, 32, 2)] if not args.quick else [(32, 8, 2), (64, 16, 2)]
        args.chains = args.chains or 200
    rows = []
    print(f"{'kernel':>12} {'T':>4} {'B':>3} {'N':>2} | {'tokens':>8} {'exact E':>8} {'METHOD':>8} | "
          f"{'attn pos':>10} {'exact E':>10} | {'encoded':>8} | {'early rej':>9} {'saving':>7}")
    for kernel in ("uniform", "within-block"):
        for T, B, N in grid:
            config = PowerSamplerConfig(alpha=4.0, block_size=B, max_new_tokens=T, mcmc_steps=N, cut_rule=kernel, early_reject=False)
            lm.counter.reset()
            result = power_sample(lm, [prompt], config, chains_per_prompt=args.chains, seed=0)
            early = power_sample(lm, [prompt], dataclasses.replace(config, early_reject=True), chains_per_prompt=args.chains, seed=0)
            if early.sequences() != result.sequences():
                raise SystemExit(f"{kernel} T={T} B={B} N={N}: early rejection changed the chains")
            early_tokens = (early.compute["tokens_sampled"] + early.compute["tokens_discarded"]) / args.chains
            all_tokens = (result.compute["tokens_sampled"] + result.compute["tokens_discarded"]) / args.chains
            stats = result.trace.stats
            per_chain_tokens = float((stats["tokens_resampled"] + stats["extension_tokens"]).sum(1).mean())
            # attention positions of sampled tokens only, from the trace: a suffix from cut m to L costs
            # sum_{i=m}^{L'-1} (P + i + 1); recomputed here from cut indices and proposed lengths.
            cut, proposed = stats["cut_index"], stats["proposed_length"]
            sampled_attention = ((proposed - cut) * (2 * len(prompt) + cut + proposed + 1) / 2).sum(1).mean()
            sampled_attention += sum(len(prompt) + i + 1 for i in range(T))
            method = N * T * T / (4 * B) + T if kernel == "uniform" else N * T / 2 + T
            row = {
                "kernel": kernel, "T": T, "B": B, "N": N, "chains": args.chains,
                "tokens_per_chain": per_chain_tokens, "tokens_expected": expected_tokens(kernel, T, B, N),
                "tokens_method_formula": method,
                "attention_sampled_per_chain": float(sampled_attention),
                "attention_expected": expected_attention(kernel, T, B, N, len(prompt)),
                "tokens_encoded_per_chain": result.compute["tokens_encoded"] / args.chains,
                "attention_all_per_chain": result.compute["attention_positions"] / args.chains,
                "tokens_drawn_per_chain": all_tokens, "tokens_early_reject": early_tokens,
                "saving": round(1 - early_tokens / all_tokens, 4),
            }
            rows.append(row)
            print(f"{kernel:>12} {T:>4} {B:>3} {N:>2} | {per_chain_tokens:>8.1f} {row['tokens_expected']:>8.1f} "
                  f"{method:>8.1f} | {row['attention_sampled_per_chain']:>10.0f} {row['attention_expected']:>10.0f} | "
                  f"{row['tokens_encoded_per_chain']:>8.1f} | {early_tokens:>9.1f} {row['saving']:>7.1%}", flush=True)
    name = "cost_scaling" if args.scaling else "compute_accounting"
    out = args.out or (quick_output(name) if args.quick else RESULTS) / f"{name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    worst = max(abs(r["tokens_per_chain"] / r["tokens_expected"] - 1) for r in rows)
    worst_attention = max(abs(r["attention_sampled_per_chain"] / r["attention_expected"] - 1) for r in rows)
    print(json.dumps({"max_relative_error_tokens": round(worst, 4), "early_reject_saving": [r["saving"] for r in rows],
                      "max_relative_error_attention": round(worst_attention, 4), "results": str(out)}))


if __name__ == "__main__":
    script_main(main)
