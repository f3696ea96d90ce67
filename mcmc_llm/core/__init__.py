"""The protocols every sampler is made of, explicit random streams, chain-batched trees and traces.

Names are imported lazily, so `mcmc_llm.core.trace` (numpy only) works where torch is absent.
"""

import importlib

_EXPORTS = {
    "Kernel": "protocols", "Move": "protocols", "Proposal": "protocols", "Target": "protocols",
    "make_generator": "random", "Trace": "trace",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mcmc_llm.core.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mcmc_llm.core' has no attribute {name!r}")
