"""Prompts as token ids: the one path from what a user gives (text or ids) to a model's context.

`encode_prompts(lm, prompts, max_new_tokens, truncate)` is used by `power_sample` and by every
`mcmc-llm sample` run.  Each prompt is

* text (a `str`): encoded by `lm.encode_prompt`, i.e. by the model's tokenizer, through its chat
  template when the model was loaded with one (`load_model(chat_template=)`); a model without a
  tokenizer reads text as whitespace-separated token ids ("3 1 4", `mcmc_llm.lm.text`) and names
  any other text in its error;
* token ids (a sequence of ints): taken as they are, each checked against the vocabulary;
* None: the empty prompt (models that need a context token refuse it).

A prompt must leave room for `max_new_tokens` in the model's context (`fit_prompt`).
`register_prompts` declares prompts as reusable prefixes on the models that reuse them.
"""

from __future__ import annotations

from typing import Sequence

from mcmc_llm.lm.protocol import LanguageModel

TRUNCATIONS = (None, "left")


def fit_prompt(ids: list[int], max_context: int | None, max_new_tokens: int, truncate: str | None = None,
               index: int = 0) -> list[int]:
    """The prompt's ids if they fit in the model's context with `max_new_tokens` after them; with
    truncate="left", its last tokens that fit; otherwise ValueError naming both numbers."""
    if truncate not in TRUNCATIONS:
        raise ValueError(f"truncate must be None (a too-long prompt is an error) or 'left', got {truncate!r}")
    if max_context is None:
        return ids
    if max_new_tokens >= max_context:
        raise ValueError(f"max_new_tokens (--max-new-tokens) {max_new_tokens} leaves no room for a prompt: the "
                         f"model's context is {max_context} tokens")
    room = max_context - max_new_tokens
    if len(ids) <= room:
        return ids
    if truncate == "left":
        return ids[-room:]
    raise ValueError(f"prompt {index} is {len(ids)} tokens, more than the model's context ({max_context} tokens) "
                     f"minus max_new_tokens / --max-new-tokens ({max_new_tokens}) = {room}; shorten it, lower "
                     "max_new_tokens, or keep its end (truncate_prompt='left', --truncate-prompt left)")


def encode_prompts(lm: LanguageModel, prompts: Sequence, max_new_tokens: int, truncate: str | None = None) -> list[list[int]]:
    """The token ids of every prompt (text, token ids or None; see above), each fitted to the
    model's context with `max_new_tokens` after it (`fit_prompt`).  ValueError for a single string
    in place of the list of prompts, and for a prompt the model cannot read."""
    if isinstance(prompts, (str, bytes)):
        raise ValueError(f"prompts is a list of prompts (texts or token-id lists), got the single string {prompts!r}; "
                         "wrap it in a list")
    max_context = getattr(lm, "max_context", None)
    return [fit_prompt(lm.encode_prompt(prompt), max_context, max_new_tokens, truncate, index)
            for index, prompt in enumerate(prompts)]


def register_prompts(models: Sequence[LanguageModel], prompts: Sequence[Sequence[int]]) -> None:
    """Declare every prompt (token ids) a reusable prefix on each distinct model that reuses them
    (`register_prefix`, e.g. the transformers backend: encoded once, copied into every row)."""
    for model in {id(model): model for model in models}.values():
        register = getattr(model, "register_prefix", None)
        if callable(register):
            for prompt in prompts:
                register(list(prompt))


__all__ = ["TRUNCATIONS", "encode_prompts", "fit_prompt", "register_prompts"]
