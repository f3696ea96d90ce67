"""Scale-out: Ray workers produce exactly the records of a single-process run."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from mcmc_llm.evaluation import load_config, record_content, run_experiment
from mcmc_llm.evaluation.results import record_key
from tests.evaluation.test_evaluation_support import write_config


def test_missing_ray_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    from mcmc_llm.evaluation.scaleout import RayUnavailable

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    config = load_config(write_config(tmp_path, workers=2, problems=1))
    with pytest.raises(RayUnavailable, match=r"pip install 'mcmc_llm\[ray\]'"):
        run_experiment(config, progress=False)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'mcmc_llm[ray]')")
def test_two_ray_workers_match_a_single_process_run(tmp_path):
    config = load_config(write_config(tmp_path, workers=2, problems=4, output="ray.jsonl"))
    single = run_experiment(dataclasses.replace(
        config, scaleout=dataclasses.replace(config.scaleout, workers=1),
        output=dataclasses.replace(config.output, path=tmp_path / "single.jsonl"),
    ), progress=False)
    spread = run_experiment(config, progress=False)
    assert spread.generated == len(single.records) > 0
    assert {record_key(r): record_content(r) for r in spread.records} == {record_key(r): record_content(r) for r in single.records}
