"""The CPU thread policy: how many threads torch uses for a run (the one place that sets it).

`configure_threads(requested, device)` is applied by `mcmc_llm.lm.registry.load_model(spec,
threads=)`, so every entry point that loads a model by name follows it: the Python API, every
command (`mcmc-llm sample`, `exact`, `run`, which also apply it before loading, to fail early) and
the evaluation executor (in-process and in each Ray worker).  In order of precedence:

1. `requested` (`load_model(threads=N)`, the `--threads N` flag, or `threads = N` in a run config's
   `[model]`): N threads;
2. the environment (`OMP_NUM_THREADS` or `MKL_NUM_THREADS` set): torch's own reading of it is kept;
3. on a CPU run, `DEFAULT_CPU_THREADS` (1) thread, whatever torch used before (a count set with
   `torch.set_num_threads` before `load_model` is replaced: pass `threads=` to keep one);
4. on an accelerator, torch's default (host threads matter little there).

Why 1 by default: the models this package runs on a CPU (the embedded 135M model, toy LMs) make
small matrices, decoded a few rows at a time, where a second thread gains little on an idle
machine and costs a great deal on a busy one: measured on a 2-core machine with another job running,
the README's demo took several times longer with 2 threads than with 1, and 2 threads were erratic
(docs/performance.md, "CPU threads"; `python experiments/bench_threads.py` measures it).  A larger
model on an idle machine with many cores may want more: pass `--threads N`.
"""

from __future__ import annotations

import os

import torch

from mcmc_llm.core.validate import optional_integer

DEFAULT_CPU_THREADS = 1
_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _runs_on_cpu(device) -> bool:
    if device is None or (isinstance(device, str) and device == "auto"):
        return not torch.cuda.is_available()
    try:
        return torch.device(device).type == "cpu"
    except (RuntimeError, TypeError, ValueError):
        return True  # an invalid device is reported by whoever resolves it


def check_threads(value) -> int | None:
    """`value` as a thread count (None stays None); ValueError unless it is an integer >= 1."""
    return optional_integer("threads", value)


def configure_threads(requested: int | None = None, device=None) -> int:
    """Apply the thread policy above; returns the number of threads torch now uses."""
    requested = check_threads(requested)
    if requested is not None:
        torch.set_num_threads(requested)
    elif any(os.environ.get(name, "").strip() for name in _ENVIRONMENT):
        pass  # the user chose through the environment; torch read it at start-up
    elif _runs_on_cpu(device):
        torch.set_num_threads(DEFAULT_CPU_THREADS)
    return torch.get_num_threads()


__all__ = ["DEFAULT_CPU_THREADS", "check_threads", "configure_threads"]
