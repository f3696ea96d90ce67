"""Decode-step benchmark: one batched decoding step against the memory-bandwidth limit, with the
static-slot and the dynamic engine side by side (and, where the model's linear layers are packed
for oneDNN, the static engine on plain `linear` too).

For each batch size C: start C copies of a prompt of P tokens, decode `--warmup` steps, then time
`--steps` steps of `lm.advance` (one forward pass, the LM head and the log-softmax over the
vocabulary, which every sampler needs), per variant, in rounds that alternate the variants so a
change in machine load moves all alike.  Variants: "dynamic" and "static" (the engines, with the
model's default linear layers: packed on a float32 CPU, `mcmc_llm.lm.hf.packed_linear`), and
"static_unpacked" (static on `torch.nn.functional.linear`) when the default packs.  Reported per
variant: median milliseconds per step over the rounds, tokens/s (C per step), and the step's
bandwidth limit

    limit = (weight bytes + bytes of the batch's cached keys/values) / copy bandwidth,

the time a step needs just to read every weight once and every row's cache once, with the
bandwidth measured here by copying a large buffer (bytes read + written per second).  On a GPU the
issue's target is the 7B step within 3x of this limit at batch 64.

Graph modes (`--graphs`, `mcmc_llm.lm.hf.decode_step`): each mode other than "off" adds a variant
"static_<mode>", the static engine with its static-shape step ("eager", or "compiled": compiled
whole, captured as CUDA graphs on CUDA); its first call's time per bucket (compilation and
capture) is reported as `capture_s`.  `--hf-generate` also times transformers' own `generate` on
the same model and batch, with `cache_implementation="static"` (compiled by transformers), in the
same run: ms per decoding step over `--steps` new tokens, after one untimed call.

It prints a line per batch size and variant as each is measured; the last line is JSON: per batch
size, each variant's ms/step, tok/s, ratio to the limit, the static/dynamic step-time ratio and,
with packing, the packed/unpacked one.  Threads: the CLI's policy (`mcmc_llm.lm.threads`: on a CPU,
1 unless `--threads N` or OMP_NUM_THREADS).

    python experiments/bench_decode.py --quick                 # CPU, embedded model, batches 1 and 8
    python experiments/bench_decode.py --model random:qwen2-7b --device cuda --batches 1 64 256 --graphs compiled --hf-generate
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mcmc_llm.commands.common import add_threads_argument
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.registry import load_model
from mcmc_llm.scripts import script_main

ENGINES = ("dynamic", "static")
UNPACKED = "static_unpacked"  # the static engine with plain linear layers
HF_GENERATE = "hf_generate_static"  # transformers' own generate, static cache, compiled


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--prompt-tokens", type=int, default=64, help="P: tokens already cached when timing starts")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--steps", type=int, default=32, help="timed steps per engine and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per engine (median reported)")
    parser.add_argument("--graphs", nargs="*", default=[], choices=("eager", "compiled"),
                        help="also time the static engine with these static-shape step modes")
    parser.add_argument("--hf-generate", action="store_true",
                        help="also time transformers' generate with its compiled static cache, side by side")
    add_threads_argument(parser)
    parser.add_argument("--quick", action="store_true", help="batches 1 and 8, 16 steps, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.steps = [1, 8], 16
    for name in ("prompt_tokens", "warmup", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if any(b < 1 for b in args.batches):
        parser.error(f"--batches must be >= 1, got {args.batches}")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second moved (read + written) by copying a `megabytes` buffer; the best of `repeats`."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() / best


def weight_bytes(lm) -> int:
    return sum(p.numel() * p.element_size() for p in lm.model.parameters())


def cache_bytes(lm, rows: int, length: int) -> int:
    """Bytes of keys and values of `rows` rows of `length` tokens (read once per decoding step)."""
    config = lm._config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(lm.model.parameters()).element_size()
    return 2 * lm.num_layers * heads * head_dim * element * rows * length


@torch.no_grad()
def time_generate(lm, batch: int, prompt: list[int], steps: int) -> float:
    """Seconds per decoding step of transformers' `generate` with its static cache (compiled by
    transformers), `steps` new tokens for `batch` rows, after one untimed call (compilation)."""
    ids = torch.tensor([prompt] * batch, device=lm.device)
    options = dict(max_new_tokens=steps, min_new_tokens=steps, do_sample=True, pad_token_id=0, cache_implementation="static")
    lm.model.generate(ids, **options)
    synchronize(lm.device)
    started = time.perf_counter()
    lm.model.generate(ids, **options)
    synchronize(lm.device)
    return (time.perf_counter() - started) / steps


@torch.no_grad()
def time_steps(lm, variant: str, batch: int, prompt: list[int], warmup: int, steps: int, packed: int) -> float:
    """Seconds per decoding step of `batch` rows on `variant` (after `warmup` untimed steps);
    `packed`: the model's packed layer count by default (0: nothing to compare)."""
    if variant == HF_GENERATE:
        return time_generate(lm, batch, prompt, steps)
    lm.engine = "dynamic" if variant == "dynamic" else "static"
    lm.graphs = variant.removeprefix("static_") if variant.removeprefix("static_") in ("eager", "compiled") else "off"
    if packed and lm.packed_layers != (0 if variant == UNPACKED else packed):
        lm.pack_linear("off" if variant == UNPACKED else "on")
    lm.clear_prefixes()
    device = lm.device
    tokens = torch.full((batch,), prompt[-1], dtype=torch.long, device=device)
    state = lm.start(TokenBatch.from_lists([prompt] * batch, device=device))
    for _ in range(warmup):
        state = lm.advance(state, tokens)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        state = lm.advance(state, tokens)
    synchronize(device)
    return (time.perf_counter() - started) / steps


def main() -> None:
    args = parse_args()
    lm = load_model(args.model, device=args.device, dtype=args.dtype, threads=args.threads)
    device = lm.device
    prompt = [(100 + 37 * i) % lm.vocab_size for i in range(args.prompt_tokens)]
    bandwidth = copy_bandwidth(device)
    weights = weight_bytes(lm)
    print(f"model {lm.name} on {device} ({next(lm.model.parameters()).dtype}), {torch.get_num_threads()} threads; "
          f"weights {weights / 1e9:.3f} GB, copy bandwidth {bandwidth / 1e9:.1f} GB/s; torch {torch.__version__}")
    packed = getattr(lm, "packed_layers", 0)
    variants = (ENGINES + ((UNPACKED,) if packed else ()) + tuple(f"static_{mode}" for mode in args.graphs)
                + ((HF_GENERATE,) if args.hf_generate else ()))
    print(f"linear layers packed for oneDNN: {packed}")
    print(f"{'batch':>5} {'variant':>15} {'ms/step':>9} {'tok/s':>9} {'limit ms':>9} {'x limit':>8}")
    results = {}
    for batch in args.batches:
        times = {variant: [] for variant in variants}
        for _ in range(args.rounds):
            for variant in variants:
                times[variant].append(time_steps(lm, variant, batch, prompt, args.warmup, args.steps, packed))
        mid_length = args.prompt_tokens + args.warmup + args.steps // 2
        limit = (weights + cache_bytes(lm, batch, mid_length)) / bandwidth
        row = {}
        for variant in variants:
            step = statistics.median(times[variant])
            row[variant] = {"ms_per_step": round(step * 1e3, 3), "tokens_per_s": round(batch / step, 1),
                            "times_limit": round(step / limit, 2)}
            print(f"{batch:>5} {variant:>15} {step * 1e3:>9.2f} {batch / step:>9.1f} {limit * 1e3:>9.3f} {step / limit:>8.1f}",
                  flush=True)
        row["limit_ms"] = round(limit * 1e3, 4)
        if args.graphs:
            row["capture_s"] = {f"{bucket} rows x {slots} slots": round(t, 2)
                                for (bucket, slots), t in lm._static.steps.capture_seconds.items()}
        row["static_over_dynamic_time"] = round(row["static"]["ms_per_step"] / row["dynamic"]["ms_per_step"], 3)
        if packed:
            row["packed_over_unpacked_time"] = round(row["static"]["ms_per_step"] / row[UNPACKED]["ms_per_step"], 3)
        results[str(batch)] = row
    print(json.dumps({"model": lm.name, "device": str(device), "dtype": str(next(lm.model.parameters()).dtype),
                      "threads": torch.get_num_threads(), "weight_bytes": weights, "packed_layers": packed, "copy_bandwidth_gb_s": round(bandwidth / 1e9, 2),
                      "prompt_tokens": args.prompt_tokens, "steps": args.steps, "rounds": args.rounds, "batches": results}))


if __name__ == "__main__":
    script_main(main)
