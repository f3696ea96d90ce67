"""Prompts and completions as text for models without a tokenizer.

Every backend turns text into token ids and back with `lm.encode_prompt(text)` and
`lm.decode(ids)` (`mcmc_llm.lm.protocol.LanguageModel`).  A model without a tokenizer (the toy
LMs, a transformers model loaded without one) uses the convention implemented here:

* a prompt is token ids: a sequence of ints, or a string of whitespace-separated ids ("3 1 4");
  every id must lie in the vocabulary [0, V); None or a blank string is the empty prompt;
* a completion is shown as its ids joined by spaces ("3 1 4").

Backends with a tokenizer (`mcmc_llm.lm.hf.HFLanguageModel`) override both methods and fall back
to these functions when they have no tokenizer.
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
