"""Scale-out over Ray actors (`[scaleout] workers = N`, optional extra `mcmc_llm[ray]`).

Each actor is a `UnitExecutor`: it loads its own model replica (and task) once, then runs work
units handed out dynamically (`ray.util.ActorPool.map_unordered`), so problems are spread over
the workers and a slow unit does not hold the others back.  Only the driver writes the results
file, appending each unit's records as they arrive.  Because a unit's seed depends on its key
alone and every unit starts from a cleared prefix cache, the records are the same as those of a
single-process run (in another order), given the same model arithmetic on every worker.

GPUs: `gpus_per_worker` (default: 1 when the cluster has GPUs and `[model] device` is not
"cpu", else 0) is the actor's `num_gpus`; Ray sets CUDA_VISIBLE_DEVICES so each replica sees its
own GPU.  `address` connects to an existing cluster (default: start a local one).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

from mcmc_llm.evaluation.config import ExperimentConfig
from mcmc_llm.evaluation.executor import UnitExecutor, WorkUnit

INSTALL_HINT = "[scaleout] workers > 1 needs Ray: pip install 'mcmc_llm[ray]' (or set workers = 1)"


class RayUnavailable(RuntimeError):
    """Ray is not installed."""


class _Worker:
    """Ray actor body: one model replica and task per process."""

    def __init__(self, config: ExperimentConfig):
        self.executor = UnitExecutor(config)

    def run(self, unit: WorkUnit) -> list[dict[str, Any]]:
        return self.executor.run(unit)


def _python_path() -> str:
    """The driver's import path, so workers import the same code (and tasks given as module:attr)."""
    entries = [os.path.abspath(p or os.curdir) for p in sys.path]
    return os.pathsep.join(dict.fromkeys(entries))


def _init_ray(ray, config: ExperimentConfig) -> bool:
    """Start or join a cluster; True if this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    env = {"PYTHONPATH": _python_path()}
    if config.scaleout.address is None:
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # inherited by the local cluster's workers
        try:
            ray.init(include_dashboard=False, log_to_driver=True, logging_level="WARNING")
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    else:
        ray.init(address=config.scaleout.address, runtime_env={"env_vars": env}, logging_level="WARNING")
    return True


def run_units(config: ExperimentConfig, units: Sequence[WorkUnit], write: Callable[[list[dict[str, Any]]], None]) -> None:
    """Run `units` on `config.scaleout.workers` Ray actors; `write(records)` as each unit finishes."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None
    started = _init_ray(ray, config)
    actors = []
    try:
        gpus = config.scaleout.gpus_per_worker
        if gpus is None:
            wants_gpu = config.model.device != "cpu" and not config.model.spec.startswith("toy:")
            gpus = 1 if wants_gpu and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        worker = ray.remote(num_cpus=1, num_gpus=gpus)(_Worker)
        count = min(config.scaleout.workers, len(units))
        actors = [worker.remote(config) for _ in range(count)]
        pool = ActorPool(actors)
        for records in pool.map_unordered(lambda actor, unit: actor.run.remote(unit), list(units)):
            write(records)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
