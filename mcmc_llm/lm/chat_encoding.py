"""Chat prompts as token ids, our way or the reference code's way (`[task] chat_tokenization`).

The message is one user turn, `[{"role": "user", "content": text}]`, with the generation prompt.

* "ours": `tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)`, what
  `HFLanguageModel.encode_prompt` does for a model loaded with a chat template: the tokens of the
  rendered template and nothing else (transformers tokenizes a rendered template without adding
  special tokens; a template writes its own).
* "authors": `tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False,
  add_generation_prompt=True))`, the reference code's `format_prompt` followed by
  `tokenizer.encode(input_text)`: `encode` adds the tokenizer's special tokens to the rendered text,
  so a tokenizer that adds a BOS on encode puts one in front (two, when the template writes one too).

The two agree for a tokenizer that adds nothing on encode (the embedded SmolLM2's, for one).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["CHAT_TOKENIZATIONS", "chat_prompt_ids", "encode_task_prompt"]

CHAT_TOKENIZATIONS = ("ours", "authors")


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def chat_prompt_ids(tokenizer, text: str, tokenization: str = "ours") -> list[int]:
    """The ids of `text` as one user turn in `tokenizer`'s chat template, `tokenization` "ours" or
    "authors" (see the module docstring); ValueError for another value."""
    if tokenization not in CHAT_TOKENIZATIONS:
        raise ValueError(f"chat_tokenization must be one of {', '.join(CHAT_TOKENIZATIONS)}, got {tokenization!r}")
    if tokenization == "authors":
        rendered = tokenizer.apply_chat_template(_messages(text), tokenize=False, add_generation_prompt=True)
        return [int(t) for t in tokenizer.encode(rendered)]
    ids = tokenizer.apply_chat_template(_messages(text), add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return [int(t) for t in ids]


def _uses_chat_template(lm, prompt) -> bool:
    tokenizer = getattr(lm, "tokenizer", None)
    return (isinstance(prompt, str) and bool(getattr(lm, "chat_template", False))
            and tokenizer is not None and bool(getattr(tokenizer, "chat_template", None)))


def encode_task_prompt(lm, prompt: str | Sequence[int], tokenization: str = "ours") -> list[int]:
    """The ids of a task prompt for `lm`: `lm.encode_prompt(prompt)`, except that with "authors" a
    text prompt that `lm` wraps in its tokenizer's chat template is encoded the reference code's way
    (those ids then pass through `lm.encode_prompt`, which checks them against the vocabulary)."""
    if tokenization not in CHAT_TOKENIZATIONS:
        raise ValueError(f"chat_tokenization must be one of {', '.join(CHAT_TOKENIZATIONS)}, got {tokenization!r}")
    if tokenization == "ours" or not _uses_chat_template(lm, prompt):
        return lm.encode_prompt(prompt)
    return lm.encode_prompt(chat_prompt_ids(lm.tokenizer, prompt, "authors"))  # ids: checked, not re-encoded
