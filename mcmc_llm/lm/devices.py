"""Where and in which precision a transformers model runs: the "auto" device and dtype.

`resolve_device("auto")` is cuda when available, else cpu; `resolve_dtype("auto", device)` is
bfloat16 on a GPU that supports it, else float32 (bfloat16 on a CPU is slow).  Used by the model
registry (`mcmc_llm.lm.registry`) and by `HFLanguageModel(device=..., dtype=...)`.
"""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def resolve_device(device: str | torch.device) -> torch.device:
    """`"auto"` -> cuda when available, else cpu; anything else is passed to `torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """`"auto"` -> bfloat16 on a GPU that supports it, float32 otherwise (CPU bf16 is slow)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]
