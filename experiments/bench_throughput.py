"""Throughput benchmark: plain generation vs the power sampler vs a mirror of the published code.

One run, one model, side by side:

  (a) plain batched generation: `sample_continuations` for C copies of the prompt (tokens/s,
      pooled over `--plain-repeats` seeded runs, one before and after every run of (b), so that a
      change in machine load moves (a) and (b) alike);
  (b) the power sampler (`power_sample`, C chains batched, `--batching`: continuous by default):
      sampled tokens/s, and wall time per finished power sample (= wall / C), pooled over
      `--sampler-repeats` runs with seeds S, S+1, ... (one run's work depends on its draws: the
      run lasts as long as its busiest chain);
  (b0) the same runs with early rejection off (`--no-compare-early-reject` skips them), same seeds,
      alternating with (b): the wall time and tokens per finished sample on and off
      (`early_reject`); with it on, (b) draws fewer tokens for the same chains, so its tokens/s
      and `sampler_vs_generate` no longer measure the same work as (a) and are reported beside
      the per-sample figures, not instead of them;
  (b') the same with the other batching (lock-step chains when (b) is continuous), one run at
      seed S, side by side (skip with `--no-compare`);
  (b'') with `--compare-engine`: (b) on the other decoding engine of the transformers backend
      (dynamic when the run's is static), one run at seed S, side by side;
  (c) a mirror of the published reference code: one chain, a fresh `model.generate` (full
      re-encoding of prompt + prefix, batch 1) for every extension and every proposal, with the
      same B, N_MCMC and T_max; wall time per finished power sample.

It prints a line as each run finishes, then a table; the last line is JSON with `sampler_vs_generate` = (b)/(a) tokens/s and
`speedup_vs_reference` = (c)/(b) wall time per finished sample (both pooled), and each run of (b)
on its own (`sampler_vs_generate_per_run`, and `occupancy_per_run`: used tokens per row of every
forward pass, `tokens_sampled / (forward_passes * C)`; where a pass costs the same whatever its
rows, as on a CPU at C = 8, `sampler_vs_generate` cannot exceed it).  Tokens/s of (b) count the tokens the chains used;
pre-fetched tokens that were thrown away (`tokens_discarded`) are reported, not counted.
`math500_projection`: 500 problems x the expected tokens of one power sample at the paper's
settings (`power_token_budget`; outputs of `--project-length` tokens, by default the cap 3072, an
upper bound) at the sampler rate measured in this run.  The rate was measured at this run's T_max
and chain count, so at T = 3072 attention costs more per token than here: a lower bound on time
per token, an upper bound on tokens.

    python experiments/bench_throughput.py --quick      # embedded model: 4 runs of (a), 3 + 3 of (b)/(b0), 1 of (b'), 3 of (c)
    python experiments/bench_throughput.py --model random:qwen2-0.5b --device cuda --chains 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import torch

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.core.random import Streams, categorical, make_generator
from mcmc_llm.lm.generation import sample_continuations
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.registry import load_model
from mcmc_llm.drivers.power import BATCHING, PowerSamplerConfig, power_sample, power_token_budget
from mcmc_llm.scripts import script_main

MATH500_PROBLEMS = 500
PROMPT = "Write a detailed story about a lighthouse keeper who finds a mysterious map. Use several paragraphs."


def _chains(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--chains must be a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--chains must be a positive integer or 'auto', got {value}")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--chains", type=_chains, default=8,
                        help="chains of the sampler run, or 'auto': the chains a real run at the projection's length "
                             "(--project-length, default 3072) gets from free memory (mcmc_llm.lm.memory.row_budget, "
                             "2 rows per chain), as problems_per_call = 'auto' would batch them")
    parser.add_argument("--alpha", type=float, default=4.0)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--mcmc-steps", type=int, default=4)
    parser.add_argument("--reference-samples", type=int, default=3, help="finished samples of the reference mirror (averaged: one sample's length varies a lot)")
    parser.add_argument("--plain-repeats", type=int, default=None,
                        help="runs of (a), pooled (each is short), one before and after every run of (b) (default: sampler repeats + 1)")
    parser.add_argument("--sampler-repeats", type=int, default=3, help="runs of (b), seeds S, S+1, ..., pooled")
    parser.add_argument("--batching", choices=BATCHING, default=BATCHING[0], help="batching of (b)")
    parser.add_argument("--no-compare", action="store_true", help="skip (b'), the run with the other batching")
    parser.add_argument("--no-compare-early-reject", action="store_true", help="skip (b0), the runs with early rejection off")
    parser.add_argument("--engine", choices=("auto", "static", "dynamic"), default="auto",
                        help="decoding engine of a transformers model (mcmc_llm.lm.hf); auto: static where supported")
    parser.add_argument("--packed-linear", choices=("auto", "on", "off"), default="auto",
                        help="float32 CPU linear layers on oneDNN-packed weights (mcmc_llm.lm.hf.packed_linear); all runs, (c) included")
    parser.add_argument("--graphs", choices=("auto", "off", "eager", "compiled"), default="auto",
                        help="the static engine's decoding step (mcmc_llm.lm.hf.decode_step; auto: compiled on CUDA)")
    parser.add_argument("--compare-engine", action="store_true", help="add (b''): the sampler on the other engine, one run")
    parser.add_argument("--project-length", type=float, default=None,
                        help="expected output length for the MATH500 projection (default: the paper's cap, 3072: an upper bound)")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    parser.add_argument("--quick", action="store_true", help="T_max=64, B=16, N_MCMC=2")
    args = parser.parse_args()
    if args.quick:
        args.max_new_tokens, args.block_size, args.mcmc_steps = 64, 16, 2
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _reference_generate(model, ids: list[int], max_new_tokens: int, temperature: float, eos: tuple[int, ...]):
    """One fresh `generate` call at batch 1 (prompt + prefix re-encoded), as the published code does.

    Returns the new tokens and their untempered and tempered log-probs from the returned logits.
    """
    device = next(model.parameters()).device
    out = model.generate(
        torch.tensor([ids], device=device), max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
        top_k=0, top_p=1.0, output_logits=True, return_dict_in_generate=True, eos_token_id=list(eos),
        pad_token_id=eos[0],
    )
    new = out.sequences[0, len(ids):].tolist()
    log_p, log_q = [], []
    for step, token in enumerate(new):
        logits = out.logits[step][0].float()
        log_p.append(torch.log_softmax(logits, -1)[token].item())
        log_q.append(torch.log_softmax(logits / temperature, -1)[token].item())
        if token in eos:
            new = new[: step + 1]
            break
    return new, log_p[: len(new)], log_q[: len(new)]


def reference_power_sample(lm, prompt: list[int], config: PowerSamplerConfig, seed: int) -> dict:
    """Algorithm 1 for one chain with a fresh `generate` per extension and per proposal (batch 1).

    Uses the exact ratio (so the chain is the same algorithm); only the execution strategy mirrors
    the published code: no batching, no cache reuse across calls.
    """
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    eos, tau, alpha = lm.eos_token_ids, config.temperature, config.alpha
    tokens, log_p, log_q = [], [], []
    sampled = 0
    for stage in range(config.num_stages):
        cap = config.stage_cap(stage)
        if not (tokens and tokens[-1] in eos) and len(tokens) < cap:
            new, p, q = _reference_generate(lm.model, prompt + tokens, cap - len(tokens), tau, eos)
            tokens, log_p, log_q, sampled = tokens + new, log_p + p, log_q + q, sampled + len(new)
        for _ in range(config.mcmc_steps):
            m = int(torch.randint(len(tokens), (1,), generator=rng))
            new, p, q = _reference_generate(lm.model, prompt + tokens[:m], cap - m, tau, eos)
            sampled += len(new)
            log_ratio = alpha * (sum(p) - sum(log_p[m:])) + (sum(log_q[m:]) - sum(q)) + math.log(len(tokens)) - math.log(m + len(new))
            if math.log(float(torch.rand((), generator=rng))) < log_ratio:
                tokens, log_p, log_q = tokens[:m] + new, log_p[:m] + p, log_q[:m] + q
    return {"tokens_sampled": sampled, "length": len(tokens)}


def stream_draw_cost(vocab: int, rows: int, repeats: int = 200) -> dict:
    """Seconds per token draw for `rows` rows over `vocab` tokens: inverse CDF from a shared
    generator against the per-row counter-based streams every run now uses (side by side)."""
    logits = torch.log_softmax(torch.randn(rows, vocab, dtype=torch.float64, generator=make_generator(0)), -1)
    generator, streams = make_generator(1), Streams.for_chains(1, 0, torch.arange(rows))
    timings = {"shared_generator": 0.0, "per_chain_streams": 0.0}
    for step in range(repeats):
        for name in timings:
            started = time.perf_counter()
            categorical(generator if name == "shared_generator" else streams.split(step), logits)
            timings[name] += time.perf_counter() - started
    return {name: total / repeats for name, total in timings.items()}


def main() -> None:
    args = parse_args()
    lm = load_model(args.model, device=args.device, dtype=args.dtype, engine=None if args.engine == "auto" else args.engine,
                    packed_linear=None if args.packed_linear == "auto" else args.packed_linear,
                    graphs=None if args.graphs == "auto" else args.graphs, threads=args.threads)
    device = lm.device
    engine = ("static" if lm._uses_static_slots() else "dynamic") if hasattr(lm, "engine") else "-"
    other_engine = {"static": "dynamic", "dynamic": "static"}.get(engine)
    prompt = list(lm.encode_prompt(args.prompt))
    if args.chains == "auto":
        from mcmc_llm.lm.memory import row_budget

        rows = row_budget(lm, len(prompt) + (args.project_length or 3072))
        args.chains = max(1, rows // 2)  # a chain: its state and a proposal in flight
        print(f"chains = auto: {args.chains} ({rows} rows of {len(prompt)} + {args.project_length or 3072} tokens "
              "from free memory)", flush=True)
    config = PowerSamplerConfig(alpha=args.alpha, block_size=args.block_size, max_new_tokens=args.max_new_tokens,
                                mcmc_steps=args.mcmc_steps)
    rule = config.sampling_rule()
    # Warm-up (first-call overheads) on a tiny job.
    sample_continuations(lm, TokenBatch.from_lists([prompt], device=device), 4, rule, make_generator(0))

    contexts = TokenBatch.from_lists([prompt] * args.chains, device=device)
    plain = {"tokens": 0, "wall": 0.0, "runs": 0, "steps": 0}

    def run_plain():
        """One seeded run of (a); runs are spread between the others, so a change in machine load
        during the benchmark moves (a) and (b) alike."""
        synchronize(device)
        started = time.perf_counter()
        drawn = sample_continuations(lm, contexts, args.max_new_tokens, rule, make_generator(args.seed + plain["runs"]))
        synchronize(device)
        plain["wall"] += time.perf_counter() - started
        plain["steps"] += int(drawn.tokens.lengths.max())
        plain["tokens"] += int(drawn.tokens.lengths.sum())
        plain["runs"] += 1

    def run_sampler(batching: str, seed: int, on_engine: str | None = None, early_reject: bool = True):
        if on_engine is not None:
            lm.engine = on_engine
        lm.counter.reset()
        synchronize(device)
        started = time.perf_counter()
        run = power_sample(lm, [prompt], dataclasses.replace(config, batching=batching, early_reject=early_reject),
                           chains_per_prompt=args.chains, seed=seed)
        synchronize(device)
        if on_engine is not None:
            lm.engine = engine
        return run, time.perf_counter() - started

    other_batching = next(b for b in BATCHING if b != args.batching)
    sampler_runs = max(args.sampler_repeats, 1)
    plain_runs = max(args.plain_repeats if args.plain_repeats is not None else sampler_runs + 1, 1)
    pairs = [("b", "b0") if i % 2 == 0 else ("b0", "b") for i in range(sampler_runs)] if not args.no_compare_early_reject else [("b",)] * sampler_runs
    schedule = [run for pair in pairs for run in ("a", *pair)] + ["a"] + ([] if args.no_compare else ["b'"])
    schedule += ["b''", "a"] if args.compare_engine and other_engine else []
    schedule += ["a"] * max(0, plain_runs - schedule.count("a"))
    results, walls, other, engine_run = [], [], None, None
    off_results, off_walls = [], []
    names = {"a": "(a) plain generation", "b": "(b) power sampler", "b0": "(b0) power sampler, early rejection off",
             "b'": f"(b') power sampler, {other_batching}", "b''": f"(b'') power sampler, {other_engine} engine"}
    total = len(schedule) - schedule.count("a") + min(plain_runs, schedule.count("a")) + args.reference_samples
    print(f"model {getattr(lm, 'name', args.model)} on {device}, {torch.get_num_threads()} threads; {total} runs, "
          "a line as each finishes", flush=True)
    finished = 0

    def report(name: str, wall: float) -> None:
        nonlocal finished
        finished += 1
        print(f"run {finished}/{total}: {name}, {wall:.1f} s", flush=True)

    for run in schedule:
        started = time.perf_counter()
        if run == "a" and plain["runs"] >= plain_runs:
            continue
        if run == "a":
            run_plain()
        elif run == "b":
            result, wall = run_sampler(args.batching, args.seed + len(results))
            results.append(result)
            walls.append(wall)
        elif run == "b0":
            result, wall = run_sampler(args.batching, args.seed + len(off_results), early_reject=False)
            off_results.append(result)
            off_walls.append(wall)
        elif run == "b'":
            other, other_wall = run_sampler(other_batching, args.seed)
        elif run == "b''":
            engine_run, engine_wall = run_sampler(args.batching, args.seed, other_engine)
        report(names[run], time.perf_counter() - started)
    plain_tokens, plain_wall = plain["tokens"], plain["wall"]
    sampler_tokens, sampler_wall = sum(r.compute["tokens_sampled"] for r in results), sum(walls)
    discarded = sum(r.compute["tokens_discarded"] for r in results)

    reference, reference_wall = [], 0.0
    for i in range(args.reference_samples):
        started = time.perf_counter()
        reference.append(reference_power_sample(lm, prompt, config, args.seed + i))
        synchronize(device)
        reference_wall += time.perf_counter() - started
        report("(c) published-code mirror, one sample", time.perf_counter() - started)
    reference_tokens = sum(r["tokens_sampled"] for r in reference)

    plain_rate = plain_tokens / plain_wall
    draw = stream_draw_cost(int(lm.vocab_size), args.chains)
    plain_step = plain_wall / max(1, plain["steps"])
    sampler_rate = sampler_tokens / sampler_wall
    reference_rate = reference_tokens / reference_wall
    per_sample_sampler = sampler_wall / (args.chains * sampler_runs)
    per_sample_reference = reference_wall / args.reference_samples
    print(f"model {getattr(lm, 'name', args.model)} on {device}, {torch.get_num_threads()} threads; "
          f"alpha={args.alpha}, B={args.block_size}, T_max={args.max_new_tokens}, N_MCMC={args.mcmc_steps}, "
          f"chains={args.chains}; {engine} engine; {getattr(lm, 'packed_layers', 0)} linear layers packed for oneDNN")
    print(f"{'run':<38} {'tokens':>8} {'wall s':>8} {'tokens/s':>9} {'s / finished sample':>20}")
    print(f"{'(a) plain batched generation':<38} {plain_tokens:>8} {plain_wall:>8.1f} {plain_rate:>9.1f} {'-':>20}")
    print(f"{f'(b) power sampler, {args.batching}, {sampler_runs} runs':<38} {sampler_tokens:>8} {sampler_wall:>8.1f} {sampler_rate:>9.1f} {per_sample_sampler:>20.2f}")
    early = {}
    if off_results:
        off_tokens, off_wall = sum(r.compute["tokens_sampled"] for r in off_results), sum(off_walls)
        drawn = lambda runs: sum(r.compute["tokens_sampled"] + r.compute["tokens_discarded"] for r in runs) / (args.chains * len(runs))  # noqa: E731
        print(f"{f'(b0) early rejection off, {len(off_results)} runs':<38} {off_tokens:>8} {off_wall:>8.1f} "
              f"{off_tokens / off_wall:>9.1f} {off_wall / (args.chains * len(off_results)):>20.2f}")
        identical = sum(a.sequences() == b.sequences() for a, b in zip(results, off_results))
        early = {"early_reject": {
            "wall_per_sample_on": round(sampler_wall / (args.chains * sampler_runs), 3),
            "wall_per_sample_off": round(off_wall / (args.chains * len(off_results)), 3),
            "wall_saving": round(1 - sampler_wall / off_wall, 4),
            "tokens_per_sample_on": round(drawn(results), 1), "tokens_per_sample_off": round(drawn(off_results), 1),
            "token_saving": round(1 - drawn(results) / drawn(off_results), 4),
            "tokens_rejected_early": sum(r.compute["tokens_rejected_early"] for r in results),
            "sampler_vs_generate_off": round(off_tokens / off_wall / plain_rate, 3),
            "runs_with_identical_chains": f"{identical}/{len(results)}",
        }}
        print(f"early rejection: {early['early_reject']['wall_saving']:.1%} less wall and {early['early_reject']['token_saving']:.1%} "
              f"fewer tokens per finished sample; identical chains in {identical} of {len(results)} run pairs")
    if other is not None:
        other_tokens = other.compute["tokens_sampled"]
        print(f"{f'(b´) power sampler, {other_batching}, 1 run':<38} {other_tokens:>8} {other_wall:>8.1f} "
              f"{other_tokens / other_wall:>9.1f} {other_wall / args.chains:>20.2f}")
    if engine_run is not None:
        engine_tokens = engine_run.compute["tokens_sampled"]
        print(f"{f'(b´´) power sampler, {other_engine} engine':<38} {engine_tokens:>8} {engine_wall:>8.1f} "
              f"{engine_tokens / engine_wall:>9.1f} {engine_wall / args.chains:>20.2f}")
    print(f"{'(c) published-code mirror, batch 1':<38} {reference_tokens:>8} {reference_wall:>8.1f} {reference_rate:>9.1f} {per_sample_reference:>20.2f}")
    def occupancy(result) -> float:
        """Tokens the chains used per row of every forward pass (1: every row of every pass drew a used token)."""
        return result.compute["tokens_sampled"] / (result.compute["forward_passes"] * args.chains)

    for result, wall in zip(results, walls):
        print(f"(b) run: {result.compute['tokens_sampled'] / wall / plain_rate:.3f} of (a); used-token occupancy "
              f"{occupancy(result):.3f}; compute {json.dumps(result.compute)}; acceptance {result.trace.acceptance_rate():.3f}")
    stream_overhead = (draw["per_chain_streams"] - draw["shared_generator"]) / plain_step
    print(f"token draw for {args.chains} rows: shared generator {draw['shared_generator'] * 1e6:.0f} us, per-chain streams "
          f"{draw['per_chain_streams'] * 1e6:.0f} us; difference {stream_overhead:.2%} of a plain decoding step "
          f"({plain_step * 1e3:.1f} ms)")
    paper = PowerSamplerConfig(alpha=4.0, block_size=192, max_new_tokens=3072, mcmc_steps=10)  # METHOD.md, MATH500
    per_sample_tokens = power_token_budget(paper, args.project_length)
    projection_hours = MATH500_PROBLEMS * per_sample_tokens / sampler_rate / 3600
    print(f"MATH500 at the paper's settings (T=3072, B=192, N_MCMC=10, outputs of {args.project_length or 3072:g} tokens): "
          f"{per_sample_tokens:,.0f} tokens per sample x {MATH500_PROBLEMS} problems at this run's measured sampler rate "
          f"({sampler_rate:.1f} tok/s, T_max={args.max_new_tokens}, {args.chains} chains) = {projection_hours:.2f} device-hours")
    compared = {}
    if other is not None:
        compared = {
            f"{other_batching}_sampler_vs_generate": round(other.compute["tokens_sampled"] / other_wall / plain_rate, 3),
            f"{other_batching}_speedup_vs_reference": round(per_sample_reference / (other_wall / args.chains), 2),
        }
    if engine_run is not None:
        compared.update({
            f"{other_engine}_engine_sampler_vs_generate": round(engine_run.compute["tokens_sampled"] / engine_wall / plain_rate, 3),
            f"{other_engine}_engine_speedup_vs_reference": round(per_sample_reference / (engine_wall / args.chains), 2),
        })
    print(json.dumps({
        "sampler_vs_generate": round(sampler_rate / plain_rate, 3),
        "threads": torch.get_num_threads(),
        "speedup_vs_reference": round(per_sample_reference / per_sample_sampler, 2),
        "sampler_vs_generate_per_run": [round(r.compute["tokens_sampled"] / w / plain_rate, 3) for r, w in zip(results, walls)],
        "occupancy_per_run": [round(occupancy(r), 3) for r in results],
        **early, "batching": args.batching, "engine": engine, "packed_layers": getattr(lm, "packed_layers", 0), "sampler_runs": sampler_runs, "tokens_discarded": discarded, **compared,
        "plain_tokens_per_s": round(plain_rate, 2), "sampler_tokens_per_s": round(sampler_rate, 2),
        "reference_tokens_per_s": round(reference_rate, 2), "sampler_s_per_sample": round(per_sample_sampler, 3),
        "reference_s_per_sample": round(per_sample_reference, 3), "chains": args.chains,
        "stream_draw_us": round(draw["per_chain_streams"] * 1e6, 1), "generator_draw_us": round(draw["shared_generator"] * 1e6, 1),
        "stream_overhead_per_step": round(stream_overhead, 4),
        "block_size": args.block_size, "max_new_tokens": args.max_new_tokens, "mcmc_steps": args.mcmc_steps,
        "math500_projection": {"tokens_per_sample": round(per_sample_tokens), "problems": MATH500_PROBLEMS,
                               "output_length": args.project_length or 3072, "hours": round(projection_hours, 3)},
    }))


if __name__ == "__main__":
    script_main(main)
