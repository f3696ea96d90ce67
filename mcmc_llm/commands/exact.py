"""`mcmc-llm exact`: print an exact law over the length-capped support S_n as JSON lines.

Each line is `{"tokens": [...], "prob": p}`: the generated token ids (prompt excluded, EOS
included when emitted), one line per sequence of positive base probability, in lexicographic
order of the token lists.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from mcmc_llm.commands.common import add_threads_argument, progress_enabled, quiet_libraries
from mcmc_llm.core.validate import integer, number
from mcmc_llm.lm import exact, registry
from mcmc_llm.lm.exact.support import DEFAULT_MAX_SUPPORT, enumerate_support, support_size_bound
from mcmc_llm.lm.toy import TOY_MODELS

NAME = "exact"
HELP = (
    "Print the exact distribution of a small-vocabulary model over S_n (sequences ending with EOS "
    "within n new tokens, or n tokens without EOS) as JSON lines {\"tokens\": [...], \"prob\": p}, "
    "EOS included, prompt excluded, in lexicographic order."
)

LAWS = ("base", "power", "nested", "tempered")
DEFAULT_ALPHA = 4.0


def _toy_listing() -> str:
    return "; ".join(f"toy:{name} ({description})" for name, (description, _) in sorted(TOY_MODELS.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, default=argparse.SUPPRESS,
        help=f"model spec (any spec of mcmc_llm.lm.registry: toy:NAME, random:PRESET[,k=v...], hf:ID, ...; "
        f"exact enumeration needs a small vocabulary). Built-in toy models: {_toy_listing()}.",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, required=True, default=argparse.SUPPRESS, metavar="N",
        help="length cap n (>= 1): the support is S_n.",
    )
    parser.add_argument(
        "--law", choices=LAWS, default="power",
        help="base: p(x); power: p(x)^alpha / Z; nested: prod_k pi(block_k | earlier blocks) with "
        "pi(block | prefix) ∝ p(block | prefix)^alpha (the uniform-within-block kernel's law); "
        "tempered: autoregressive sampling at temperature T, prod_t p(x_t|x_<t)^(1/T) / sum_v p(v|x_<t)^(1/T).",
    )
    parser.add_argument(
        "--alpha", type=float, default=argparse.SUPPRESS,
        help=f"power exponent, a finite number > 0, for --law power and nested (default {DEFAULT_ALPHA:g}); "
        "for --law tempered it sets the default temperature 1/alpha.",
    )
    parser.add_argument(
        "--block-size", type=int, default=argparse.SUPPRESS, metavar="B",
        help="block size for --law nested (required there), 1 <= B <= --max-new-tokens; "
        "the last block is shorter when n is not a multiple of B.",
    )
    parser.add_argument(
        "--temperature", type=float, default=argparse.SUPPRESS, metavar="T",
        help="sampling temperature for --law tempered, a finite number > 0 (default 1/alpha).",
    )
    parser.add_argument(
        "--prompt", default=argparse.SUPPRESS, metavar="IDS",
        help='prompt token ids conditioning the law, separated by spaces or commas, e.g. "1 2 3" (default: empty).',
    )
    parser.add_argument(
        "--max-support", type=int, default=DEFAULT_MAX_SUPPORT, metavar="COUNT",
        help="refuse to enumerate supports with more sequences than this.",
    )
    add_threads_argument(parser)


def load_model(spec: str, threads: int | None = None):
    """The language model named `spec` (`mcmc_llm.lm.registry.load_model`; `toy:NAME` for the toys)."""
    try:
        return registry.load_model(spec, threads=threads)
    except RuntimeError as error:  # a model that cannot be loaded: a clean CLI error, not a traceback
        raise ValueError(str(error)) from error


def parse_prompt(text: str) -> list[int]:
    tokens = []
    for piece in text.replace(",", " ").split():
        try:
            tokens.append(int(piece))
        except ValueError:
            raise ValueError(f"--prompt must be integer token ids separated by spaces or commas, got {piece!r}") from None
    return tokens


def run(args: argparse.Namespace) -> int:
    for name, default in (("alpha", None), ("block_size", None), ("temperature", None), ("prompt", ""),
                          ("max_support", DEFAULT_MAX_SUPPORT)):
        if not hasattr(args, name):
            setattr(args, name, default)
    n = integer("--max-new-tokens", args.max_new_tokens)
    integer("--max-support", args.max_support)
    law = args.law
    if args.block_size is not None and law != "nested":
        raise ValueError(f"--block-size applies only to --law nested (got --law {law})")
    if args.temperature is not None and law != "tempered":
        raise ValueError(f"--temperature applies only to --law tempered (got --law {law})")
    if args.alpha is not None and law == "base":
        raise ValueError("--alpha does not apply to --law base")
    alpha = number("--alpha", DEFAULT_ALPHA if args.alpha is None else args.alpha, 0, strict=True)
    if law == "nested":
        if args.block_size is None:
            raise ValueError("--law nested requires --block-size")
        if not 1 <= args.block_size <= n:
            raise ValueError(
                f"--block-size must be between 1 and --max-new-tokens = {n}, got --block-size {args.block_size}"
            )
    temperature = None
    if law == "tempered":
        temperature = number("--temperature", 1.0 / alpha if args.temperature is None else args.temperature, 0, strict=True)
    prompt = parse_prompt(args.prompt)

    from mcmc_llm.lm.threads import configure_threads

    configure_threads(getattr(args, "threads", None), "auto")
    quiet_libraries(progress_enabled(args))
    lm = load_model(args.model, getattr(args, "threads", None))
    if any(token >= lm.vocab_size or token < 0 for token in prompt):
        raise ValueError(f"--prompt token ids must be in [0, {lm.vocab_size}) for {args.model}, got {prompt}")
    if getattr(lm, "max_context", None) is not None:  # a transformers model: full support, needs a context token
        live = lm.vocab_size - len(set(lm.eos_token_ids))
        if (n * math.log10(max(live, 1)) > math.log10(args.max_support) + 1  # far too big: skip the exact count
                or support_size_bound(lm.vocab_size, lm.vocab_size - live, n) > args.max_support):
            raise ValueError(
                f"exact enumeration needs a small vocabulary: {args.model} has {lm.vocab_size} tokens, so S_{n} holds "
                f"about 10^{n * math.log10(max(live, 2)):.0f} sequences, more than --max-support {args.max_support}; use a toy:NAME model, "
                "random:PRESET,vocab_size=V with a small V, or a smaller --max-new-tokens"
            )
        if not prompt:
            raise ValueError(f"{args.model} needs at least one context token: pass --prompt IDS (e.g. its BOS token id)")
    support = enumerate_support(lm, n, prompt, max_support=args.max_support)
    if law == "base":
        result = exact.base_law(lm, n, prompt, support=support)
    elif law == "power":
        result = exact.power_law(lm, n, alpha, prompt, support=support)
    elif law == "nested":
        result = exact.nested_law(lm, n, alpha, args.block_size, prompt, support=support)
    else:
        result = exact.tempered_law(lm, n, temperature, prompt, support=support)

    out = sys.stdout
    for sequence, prob in zip(result.sequences, result.probs().tolist()):
        out.write(json.dumps({"tokens": list(sequence), "prob": prob}) + "\n")
    out.flush()
    return 0
