"""Compare samplers of p^alpha on an exact toy LM: TV to p^alpha against tokens spent per final sample.

Methods (each gives one final sample per independent run; `draws` runs are batched together):

* MH (Algorithm 1, block size B) with uniform, within-block and entropy cuts, several N_MCMC;
* Power-SMC with several particle counts P (the final sample is one SIR draw from the weighted
  particles), and SMC followed by 2 uniform-cut MH rejuvenation steps at the end;
* the rollout sampler with every token as a candidate (K = V) and several rollout counts M (jackknife on);
* best-of-N by likelihood: N samples from the tempered proposal (tau = 1/alpha), keep the one of
  largest log p (ties: the first).  Its exact law is also computed: with F the proposal's mass of
  sequences whose log p is at most a level c, the kept sequence's level is c with probability
  F(c)^N - F(c-)^N, and within a level it is distributed like the proposal.

Tokens per final sample: tokens drawn from the LM (`tokens_sampled`) divided by the number of
runs; for the rollout sampler the K x M candidate tokens pushed in front of the rollouts are added.

    python experiments/compare_samplers.py            # full study (~5-10 minutes on 2 cores)
    python experiments/compare_samplers.py --quick    # smoke version (< 1 minute)

Rows are appended to `--out` (default experiments/results/compare_samplers.jsonl; with --quick, a new
temporary directory outside the repository) as each run completes; a rerun with the same `--out`
skips rows already recorded, and Ctrl-C keeps what is written.  One torch thread unless
`--threads N` or OMP_NUM_THREADS (`mcmc_llm.lm.threads`).  `python paper_figures/compare_samplers.py` draws the figure.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.core.random import make_generator
from mcmc_llm.diagnostics.exact import count_states, total_variation, tv_noise_floor
from mcmc_llm.lm.exact import power_law, tempered_law
from mcmc_llm.lm.exact.support import ExactLaw
from mcmc_llm.lm.generation import SamplingRule, sample_continuations
from mcmc_llm.lm.protocol import TokenBatch, spent
from mcmc_llm.lm.threads import configure_threads
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.scripts import keeping, quick_output, script_main
from mcmc_llm.rollout import RolloutConfig, rollout_sample
from mcmc_llm.smc import SMCConfig, power_smc
from resume import completed_keys  # sibling module: experiments/resume.py

RESULTS = Path(__file__).parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="derail", help="toy model name (see mcmc_llm.lm.toy.TOY_MODELS)")
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--block-size", type=int, default=2, help="MH block size B")
    parser.add_argument("--alpha", type=float, default=4.0)
    parser.add_argument("--draws", type=int, default=4000, help="independent runs (final samples) per setting")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small settings for a smoke test (< 1 minute)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSONL (default experiments/results/compare_samplers.jsonl; --quick: a new temporary directory)")
    add_threads_argument(parser)
    parser.add_argument("--bias-tables", action="store_true",
                        help="instead of the comparison, measure the SMC draw bias and the rollout sampler's bias "
                             "(the tables of docs/smc.md); written to experiments/results/smc_bias_tables.json")
    args = parser.parse_args()
    args.grid = {
        "MH uniform": [0, 1, 2, 4, 8, 16, 32, 64, 128],
        "MH within-block": [1, 4, 16, 64],
        "MH entropy": [1, 4, 16, 64],
        "SMC": [1, 2, 4, 8, 16, 32, 64, 128, 256],
        "SMC + 2 MH (end)": [4, 16, 64],
        "rollout K=V": [1, 2, 4, 8, 16, 32],
        "rollout K=V, no jackknife": [1, 2, 4, 8, 16, 32],
        "rollout K=3": [2, 8, 32],
        "best-of-N": [1, 2, 4, 8, 16, 32, 64],
    }
    if args.quick:
        args.draws, args.seeds = 2000, 1
        args.grid = {"MH uniform": [0, 4, 16], "MH within-block": [4], "MH entropy": [4], "SMC": [1, 8, 64],
                     "SMC + 2 MH (end)": [8], "rollout K=V": [1, 4], "best-of-N": [1, 8, 64]}
    if args.out is None:
        args.out = quick_output("compare_samplers") / "compare_samplers.jsonl" if args.quick else RESULTS / "compare_samplers.jsonl"
    return args


def best_of_n_law(tempered: ExactLaw, count: int) -> dict[tuple[int, ...], float]:
    """Exact law of the max-log-p draw among `count` iid draws from `tempered` (see the module doc)."""
    q = tempered.probs()
    level = np.round(tempered.base_log_probs, 9)
    levels, inverse = np.unique(level, return_inverse=True)  # ascending log p
    class_mass = np.bincount(inverse, weights=q)
    below = np.concatenate([[0.0], np.cumsum(class_mass)[:-1]])
    at_most = below + class_mass
    top_class = np.clip(at_most, 0, 1) ** count - np.clip(below, 0, 1) ** count
    probs = np.where(class_mass[inverse] > 0, top_class[inverse] * q / np.maximum(class_mass[inverse], 1e-300), 0.0)
    return dict(zip(tempered.sequences, probs.tolist()))


def run_method(method: str, value: int, seed: int, lm, args) -> tuple[list[tuple[int, ...]], dict, dict]:
    """Draw `args.draws` final samples; return (samples, compute counter deltas, extra fields)."""
    n, alpha, draws = args.max_new_tokens, args.alpha, args.draws
    run_seed = 7919 * seed + value
    extra: dict = {}
    if method.startswith("MH"):
        kernel = method.split(" ", 1)[1]
        config = PowerSamplerConfig(alpha=alpha, block_size=args.block_size, max_new_tokens=n, mcmc_steps=value, cut_rule=kernel)
        result = power_sample(lm, [[]], config, chains_per_prompt=draws, seed=run_seed)
        extra["acceptance"] = result.trace.acceptance_rate() if result.trace is not None else None
        return [tuple(s) for s in result.sequences()], result.compute, extra
    if method.startswith("SMC"):
        rejuvenation = 2 if "MH" in method else 0
        config = SMCConfig(alpha=alpha, max_new_tokens=n, num_particles=value, rejuvenation_steps=rejuvenation)
        result = power_smc(lm, [[]] * draws, config, seed=run_seed)
        z_hat = torch.exp(result.log_normalizer).numpy()
        z_exact = math.exp(args.log_z)
        extra.update({
            "z_hat_over_z": float(z_hat.mean() / z_exact),
            "z_hat_over_z_se": float(z_hat.std(ddof=1) / math.sqrt(draws) / z_exact),
            "log_z_hat_mean_minus_log_z": float(result.log_normalizer.mean() - args.log_z),
            "resampling_events_per_run": float(result.diagnostics["resampled"].sum(1).mean()),
            "final_ess_fraction": float(np.mean(result.diagnostics["final_ess"]) / value),
        })
        samples = result.draw(make_generator(run_seed + 1)).to_lists()
        return [tuple(s) for s in samples], result.compute, extra
    if method.startswith("rollout"):
        candidates = 3 if "K=3" in method else lm.vocab_size
        config = RolloutConfig(alpha=alpha, max_new_tokens=n, top_candidates=candidates, rollouts=value,
                               jackknife="no jackknife" not in method)
        result = rollout_sample(lm, [[]], config, samples_per_prompt=draws, seed=run_seed)
        compute = dict(result.compute)
        compute["tokens_sampled"] += result.diagnostics["candidate_tokens"]
        extra["jackknife_clipped_fraction"] = float(np.nanmean(result.diagnostics["jackknife_clipped"]))
        return [tuple(s) for s in result.sequences()], compute, extra
    if method == "best-of-N":
        before = lm.counter.snapshot()
        contexts = TokenBatch.from_lists([[]] * (draws * value))
        continuation = sample_continuations(lm, contexts, n, SamplingRule(1 / alpha), make_generator(run_seed))
        log_p = continuation.log_p.sum(-1).reshape(draws, value)
        best = log_p.argmax(-1) + torch.arange(draws) * value
        samples = TokenBatch(continuation.tokens.ids[best], continuation.tokens.lengths[best]).to_lists()
        compute = spent(before, lm.counter.snapshot())
        extra["tv_exact_law"] = total_variation(best_of_n_law(args.tempered, value), args.exact)
        return [tuple(s) for s in samples], compute, extra
    raise ValueError(f"unknown method {method!r}")


def _tv(a, b) -> float:
    return 0.5 * float(np.abs(np.asarray(a) - np.asarray(b)).sum())


def smc_draw_bias(model: str, n: int, alpha: float, particles: int, total_rows: int, seed: int) -> dict:
    """TV(law of one SIR draw, p^alpha) for Power-SMC with P particles.  The law of a draw is
    E[sum_i W_i delta_{X_i}]; it is estimated by averaging the weighted particle laws of R runs
    (Rao-Blackwellised: no draw noise).  `split_half_tv` (TV between the two halves' estimates,
    halved) indicates the Monte Carlo noise left in the estimate."""
    lm = load_toy(model)
    law = power_law(lm, n, alpha)
    index = {sequence: i for i, sequence in enumerate(law.sequences)}
    runs = max(total_rows // particles, 200)
    halves = []
    for half in range(2):
        result = power_smc(lm, [[]] * (runs // 2), SMCConfig(alpha=alpha, max_new_tokens=n, num_particles=particles),
                           seed=seed + half)
        ids = np.array([index[tuple(s)] for s in result.particles.to_lists()])
        halves.append(np.bincount(ids, weights=result.weights().reshape(-1).numpy(), minlength=len(law)) / (runs // 2))
    estimate = (halves[0] + halves[1]) / 2
    return {"model": f"toy:{model}", "n": n, "alpha": alpha, "particles": particles, "runs": runs,
            "tv_draw_law": _tv(estimate, law.probs()), "split_half_tv": _tv(halves[0], halves[1]) / 2}


def rollout_conditional_bias(model: str, n: int, alpha: float, prefix, rollouts: int, jackknife: bool,
                             copies: int, seed: int, candidates: int | None = None) -> dict:
    """TV(E[pi_hat(. | prefix)], pi_alpha(. | prefix)), E estimated over `copies` independent estimates."""
    from mcmc_llm.lm.sequences import SequenceBatch
    from mcmc_llm.rollout import rollout_next_token_probs

    lm = load_toy(model)
    law = power_law(lm, n, alpha)
    exact = np.zeros(lm.vocab_size)
    for sequence, prob in law.as_dict().items():
        if len(sequence) > len(prefix) and sequence[: len(prefix)] == tuple(prefix):
            exact[sequence[len(prefix)]] += prob
    exact /= exact.sum()
    config = RolloutConfig(alpha=alpha, max_new_tokens=n, top_candidates=candidates or lm.vocab_size,
                           rollouts=rollouts, jackknife=jackknife)
    position = SequenceBatch.from_sequences(lm, SamplingRule(), TokenBatch.from_lists([[]] * copies),
                                            [list(prefix)] * copies, n)
    probs, info = rollout_next_token_probs(lm, position, config, make_generator(seed))
    return {"model": f"toy:{model}", "n": n, "prefix": list(prefix), "rollouts": rollouts, "jackknife": jackknife,
            "candidates": config.top_candidates, "tv_conditional": _tv(probs.mean(0).numpy(), exact),
            "mc_noise": float(probs.std(0).sum()) / (2 * math.sqrt(copies)),
            "clipped_fraction": float(info["jackknife_clipped"].double().mean()),
            "mean_estimate": np.round(probs.mean(0).numpy(), 4).tolist(), "exact": np.round(exact, 4).tolist()}


def rollout_sequence_bias(model: str, n: int, alpha: float, candidates: int, rollouts: int, jackknife: bool,
                          draws: int, seed: int) -> dict:
    lm = load_toy(model)
    law = power_law(lm, n, alpha)
    config = RolloutConfig(alpha=alpha, max_new_tokens=n, top_candidates=candidates, rollouts=rollouts, jackknife=jackknife)
    result = rollout_sample(lm, [[]], config, samples_per_prompt=draws, seed=seed)
    return {"model": f"toy:{model}", "n": n, "candidates": candidates, "rollouts": rollouts, "jackknife": jackknife,
            "draws": draws, "tv_sequences": law.tv([tuple(s) for s in result.sequences()]),
            "noise_floor": tv_noise_floor(law.as_dict(), draws),
            "tv_tempered": law.tv(tempered_law(lm, n, 1 / alpha, support=law))}


def bias_tables(out: Path) -> None:
    """The bias measurements quoted in docs/smc.md (about 3 minutes on 2 cores)."""
    tables: dict[str, list[dict]] = {"smc_draw_bias": [], "rollout_conditional_bias": [], "rollout_sequence_bias": []}
    for particles in (4, 16, 64, 256):
        tables["smc_draw_bias"].append(smc_draw_bias("derail", 4, 4.0, particles, 1_000_000, seed=particles))
        print(json.dumps(tables["smc_draw_bias"][-1]), flush=True)
    for model, n, prefix in (("trigram", 4, (1,)), ("derail", 6, ())):
        for rollouts in (1, 2, 4, 8, 16, 32):
            for jackknife in ((False, True) if rollouts > 1 else (False,)):
                row = rollout_conditional_bias(model, n, 4.0, prefix, rollouts, jackknife, 4000, seed=rollouts)
                tables["rollout_conditional_bias"].append(row)
                print(json.dumps(row), flush=True)
    for candidates, rollouts, jackknife in ((4, 1, False), (4, 4, False), (4, 4, True), (4, 16, True), (2, 16, True)):
        row = rollout_sequence_bias("trigram", 4, 4.0, candidates, rollouts, jackknife, 20_000, seed=rollouts)
        tables["rollout_sequence_bias"].append(row)
        print(json.dumps(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tables, indent=1) + "\n")
    print(f"wrote {out}")


def main() -> None:
    args = parse_args()
    threads = configure_threads(args.threads, "cpu")
    if args.bias_tables:
        bias_tables(RESULTS / "smc_bias_tables.json")
        return
    lm = load_toy(args.model)
    target = power_law(lm, args.max_new_tokens, args.alpha)
    args.exact = target.as_dict()
    args.tempered = tempered_law(lm, args.max_new_tokens, 1 / args.alpha, support=target)
    values = args.alpha * target.base_log_probs
    args.log_z = float(values.max() + np.log(np.exp(values - values.max()).sum()))
    floor = tv_noise_floor(args.exact, args.draws)
    done = completed_keys(args.out, ("method", "value", "seed"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"results: {args.out}", flush=True)
    print(f"model toy:{args.model}, n={args.max_new_tokens}, alpha={args.alpha}, B={args.block_size} (MH), "
          f"{args.draws} draws, |S_n|={len(target)}, TV(tempered, p^alpha)={target.tv(args.tempered):.4f}, "
          f"noise floor {floor:.4f}")
    print(f"{'method':>18} {'value':>5} {'seed':>4} {'tokens/sample':>13} {'TV(p^a)':>8} {'wall':>6}")
    started_all = time.perf_counter()
    with keeping(args.out, f"rerun with --out {args.out} to resume"), args.out.open("a") as handle:
        for method, settings in args.grid.items():
            for value in settings:
                for seed in range(args.seeds):
                    if (method, value, seed) in done:
                        continue
                    started = time.perf_counter()
                    samples, compute, extra = run_method(method, value, seed, lm, args)
                    row = {
                        "method": method, "value": value, "seed": seed, "model": f"toy:{args.model}",
                        "alpha": args.alpha, "max_new_tokens": args.max_new_tokens, "block_size": args.block_size,
                        "draws": args.draws, "tokens_per_sample": compute["tokens_sampled"] / args.draws,
                        "attention_positions_per_sample": compute["attention_positions"] / args.draws,
                        "tv_power": total_variation(count_states(samples), args.exact),
                        "noise_floor": floor, "wall_s": time.perf_counter() - started, **extra,
                    }
                    handle.write(json.dumps(row) + "\n")
                    handle.flush()
                    print(f"{method:>18} {value:>5} {seed:>4} {row['tokens_per_sample']:>13.1f} {row['tv_power']:>8.4f} "
                          f"{row['wall_s']:>6.1f}", flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    summary = {}
    for method, settings in args.grid.items():
        top = max(settings)
        picked = [r for r in rows if r["method"] == method and r["value"] == top]
        if picked:
            summary[f"{method} @ {top}"] = {
                "tv_power": round(float(np.mean([r["tv_power"] for r in picked])), 4),
                "tokens_per_sample": round(float(np.mean([r["tokens_per_sample"] for r in picked])), 1),
            }
    print(json.dumps({"largest_setting": summary, "noise_floor": round(floor, 4), "results": str(args.out),
                      "wall_s": round(time.perf_counter() - started_all, 1), "threads": threads}))


if __name__ == "__main__":
    script_main(main)
