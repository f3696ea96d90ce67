"""The figure scripts' shared helpers (paper_figures/common.py, per_problem.py): the main comparison
is read from one file, and comparisons with the 24-problem runs restrict it to the same problems."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

FIGURES = Path(__file__).resolve().parents[2] / "paper_figures"
sys.path.insert(0, str(FIGURES))  # the scripts import each other as top-level modules

import common  # noqa: E402
from per_problem import Point, Store  # noqa: E402

from mcmc_llm.evaluation.grading import gold_answer  # noqa: E402

RESULTS = common.RESULTS


def record(task: int, method: str, index: int, correct: bool, tokens: int = 10) -> dict:
    task_id = f"arithmetic/d1/s0/{task}"
    answer = gold_answer(task_id) + (0 if correct else 1)
    return {"task_id": task_id, "method": method, "sample_index": index, "completion": f"The answer is {answer}.",
            "passed": correct, "log_p": -1.0 - index, "length": 5, "ended": True,
            "compute": {"tokens_sampled": tokens, "tokens_encoded": tokens + 3}}


def write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    # "big": 4 problems, low temperature (2 samples, 10 tokens each) and power (1 sample, 20 tokens);
    # "small": the first 2 problems only, one sampler.
    big = [record(t, "low_temp", i, correct=(t + i) % 2 == 0) for t in range(4) for i in range(2)]
    big += [record(t, "power", 0, correct=t < 3, tokens=20) for t in range(4)]
    write(tmp_path / "big.jsonl", big)
    write(tmp_path / "small.jsonl", [record(t, "smc", 0, correct=True, tokens=20) for t in range(2)])
    return tmp_path


def test_on_problems_of_keeps_only_the_other_runs_problems_and_refuses_missing_ones(results):
    big, small = common.records(results, "big"), common.records(results, "small")
    kept = common.on_problems_of(big, small)
    assert common.problems(kept) == common.problems(small) == {"arithmetic/d1/s0/0", "arithmetic/d1/s0/1"}
    assert len(kept) == 6  # 2 problems x (2 low-temperature samples + 1 power chain)
    with pytest.raises(ValueError, match="not in these records"):
        common.on_problems_of(small, big)  # would leave problems 2 and 3 unpaired


def test_store_restricts_points_and_pairs_only_identical_problems(results):
    store = Store(results)
    low, low_small = Point("big", "low_temp"), Point("big", "low_temp").restricted("small")
    assert low_small.on == "small" and Point("small", "smc").restricted("small").on is None
    assert len(store.tasks(low)) == 4 and len(store.tasks(low_small)) == 2
    np.testing.assert_allclose(store.values(low, "strict"), [0.5, 0.5, 0.5, 0.5])
    assert store.tokens(low_small) == 10.0
    with pytest.raises(ValueError, match="different problems"):
        store.difference(Point("small", "smc"), low, "lenient")  # 2 problems against 4: no silent intersection
    np.testing.assert_allclose(store.difference(Point("small", "smc"), low_small, "lenient"), [0.5, 0.5])
    # matched budget: a 20-token point against 10-token low-temperature samples is majority@2
    assert store.matched(Point("big", "power"), low) == 2
    assert store.matched(Point("big", "power", "majority", 2), low) is None  # 40 tokens: 4 samples, only 2 stored


@pytest.mark.skipif(not (RESULTS / f"{common.MAIN}.jsonl").exists() or not (RESULTS / "main.jsonl").exists(),
                    reason="no committed CPU results")
def test_main72_holds_main_as_its_first_24_problems():
    """What restricting the main comparison to the 24-problem runs relies on: main72 was resumed
    from main.jsonl, so on main's problems it holds exactly main's records."""
    main72 = common.records(RESULTS, common.MAIN)
    main = common.records(RESULTS, "main")
    assert len(common.problems(main72)) == 72 and len(common.problems(main)) == 24
    assert common.on_problems_of(main72, main) == main
    for run in common.SHORT_RUNS:
        if (RESULTS / f"{run}.jsonl").exists():
            assert common.problems(common.records(RESULTS, run)) == common.problems(main)
