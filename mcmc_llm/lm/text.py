"""Text and token ids: the tokenizer-free convention, completions as text, stop strings as tokens.

Every backend turns text into token ids and back with `lm.encode_prompt(text)` and
`lm.decode(ids)` (`mcmc_llm.lm.protocol.LanguageModel`).  A model without a tokenizer (the toy
LMs, a transformers model loaded without one) uses the convention implemented here:

* a prompt is token ids: a sequence of ints, or a string of whitespace-separated ids ("3 1 4");
  every id must lie in the vocabulary [0, V); None or a blank string is the empty prompt;
* a completion is shown as its ids joined by spaces ("3 1 4").

Backends with a tokenizer (`mcmc_llm.lm.hf.HFLanguageModel`) override both methods and fall back
to these functions when they have no tokenizer.

`completion_text(lm, ids, skip_special_tokens=)` is the text shown and recorded for a sample: the
tokenizer's `decode(ids, skip_special_tokens=...)`, so special tokens (`<|im_end|>`, EOS) are left
out unless asked for; without a tokenizer every id is shown (there the ids are the text).

`stop_token_ids(lm, texts)` turns stop strings into tokens for the EOS set
(`mcmc_llm.lm.registry.with_eos_token_ids`).  The power target is a law over sequences that end in
an EOS *token* (or reach the length cap), so a stop string is accepted only when it is exactly one
token: that token then ends a sequence like EOS does (and stays in it).  The same characters
produced by other tokens do not end a sequence; a string of several tokens is refused, since
stopping at it would change the support in a way the MH target does not state.
"""

from __future__ import annotations

from typing import Sequence

import torch


def ids_from_text(text: str | Sequence[int] | None, vocab_size: int, model: str = "this model") -> list[int]:
    """The token ids of a prompt given as ids or as whitespace-separated ids (None, "": no ids).

    Raises ValueError naming the prompt when it is not ids, and the ids outside [0, vocab_size)."""
    if text is None:
        return []
    if isinstance(text, str):
        try:
            ids = [int(piece) for piece in text.split()]
        except ValueError:
            raise ValueError(f"{model} has no tokenizer: a prompt is token ids, e.g. '3 1 4', got {text!r}") from None
    else:
        ids = [int(token) for token in text]
    bad = [token for token in ids if not 0 <= token < vocab_size]
    if bad:
        raise ValueError(f"prompt token ids {bad} are outside the vocabulary [0, {vocab_size})")
    return ids


def text_from_ids(ids: Sequence[int] | torch.Tensor) -> str:
    """Token ids joined by spaces (the text of a completion for a model without a tokenizer)."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    return " ".join(str(int(token)) for token in ids)


def completion_text(lm, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
    """The text of generated tokens: the tokenizer's `decode(ids, skip_special_tokens=...)` (as in
    transformers), or `lm.decode(ids)` for a model without a tokenizer."""
    tokenizer = getattr(lm, "tokenizer", None)
    if tokenizer is None:
        return lm.decode(ids)
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    return tokenizer.decode(ids, skip_special_tokens=bool(skip_special_tokens))


def stop_token_ids(lm, texts: Sequence[str]) -> list[int]:
    """The token of each stop string (deduplicated, in order): its tokenizer encoding without special
    tokens or chat template, or its id for a model without a tokenizer.  ValueError naming the
    string unless it is exactly one token."""
    tokenizer = getattr(lm, "tokenizer", None)
    name = getattr(lm, "name", type(lm).__name__)
    found: list[int] = []
    for text in texts:
        if tokenizer is not None:
            ids = [int(t) for t in tokenizer(text, add_special_tokens=False).input_ids]
        else:
            ids = ids_from_text(text, lm.vocab_size, name)
        if len(ids) != 1:
            raise ValueError(
                f"stop string {text!r} is {len(ids)} tokens {ids} for {name}; a stop string must be exactly one token "
                "(it joins the EOS set); give token ids with --eos-token-id / eos_token_ids instead"
            )
        if ids[0] not in found:
            found.append(ids[0])
    return found
