"""A row budget from free memory: how many sequences of a given length one batch can hold.

A row of the batch holds its key/value cache, `kv_bytes_per_token` bytes per token:

    kv_bytes_per_token = 2 (K and V) x layers x key/value heads x head dim x element size,

read from a transformers model's config.  With `free` bytes free on the model's device (CUDA:
`torch.cuda.mem_get_info`; CPU: the operating system's available pages), a batch of rows of
`tokens_per_row` tokens fits `fraction x free / (tokens_per_row x kv_bytes_per_token + logits)`
rows, the logits being one float32 row of the vocabulary per step, twice (logits and their
softmax).  On a CPU, where a wider batch costs time more than memory, the budget is also capped
at `CPU_ROWS`.  A model without a transformers config (the toy LMs) gets `FALLBACK_ROWS`.
"""

from __future__ import annotations

import os

import torch

FALLBACK_ROWS = 64
CPU_ROWS = 64
MAX_ROWS = 4096


def kv_bytes_per_token(lm) -> int | None:
    """Key/value cache bytes per token of `lm` (None when `lm` has no transformers config)."""
    model = getattr(lm, "model", None)
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers, heads = getattr(text, "num_hidden_layers", None), getattr(text, "num_attention_heads", None)
    if not layers or not heads:
        return None
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    element = next(model.parameters()).element_size()
    return 2 * int(layers) * int(kv_heads) * int(head_dim) * int(element)


def free_bytes(device: torch.device | str) -> int | None:
    """Free memory on `device` in bytes (None where it cannot be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def row_budget(lm, tokens_per_row: int, *, fraction: float = 0.5) -> int:
    """Rows of `tokens_per_row` tokens that `fraction` of the free memory of `lm`'s device holds
    (module docstring), between 1 and `MAX_ROWS`; `FALLBACK_ROWS` without a config to read."""
    per_token = kv_bytes_per_token(lm)
    device = torch.device(getattr(lm, "device", "cpu"))
    free = free_bytes(device)
    if per_token is None or free is None:
        return FALLBACK_ROWS
    logits = 2 * 4 * int(getattr(lm, "vocab_size", 0) or 0)
    rows = int(fraction * free // (tokens_per_row * per_token + logits))
    if device.type != "cuda":
        rows = min(rows, CPU_ROWS)
    return max(1, min(rows, MAX_ROWS))


__all__ = ["row_budget", "kv_bytes_per_token", "free_bytes", "FALLBACK_ROWS", "CPU_ROWS", "MAX_ROWS"]
