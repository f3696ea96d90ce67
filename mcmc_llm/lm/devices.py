"""Where and in which precision a transformers model runs: the "auto" device and dtype.

`resolve_device("auto")` is cuda when available, else cpu; `resolve_dtype("auto", device)` is
bfloat16 on a GPU that supports it, else float32 (bfloat16 on a CPU is slow).  Used by the model
registry (`mcmc_llm.lm.registry`) and by `HFLanguageModel(device=..., dtype=...)`.
"""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def resolve_device(device: str | torch.device) -> torch.device:
    """`"auto"` -> cuda when available, else cpu; anything else is passed to `torch.device`.

    ValueError, naming the device, for a name torch does not know ("tpu") and for a cuda or mps
    device this machine does not have (a CPU-only torch build, a GPU index out of range)."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if target.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"device {str(device)!r} is not available: {why} (torch {torch.__version__}); use cpu or auto")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} is not available: this machine has {torch.cuda.device_count()} GPU(s)")
    elif target.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r} is not available on this machine; use cpu or auto")
    return target


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
