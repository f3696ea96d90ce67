"""Majority vote and best-of-N computed from stored samples: what a selection method would score
with N samples, without drawing new ones.

A problem has m stored i.i.d. samples i = 1..m, each with an answer a_i (None when it states
none), a correctness c_i and a log-likelihood log p_i.  A selection rule S maps N samples to one
answer; its accuracy with N samples is estimated by the mean over all C(m, N) subsets of size N
drawn without replacement,

    acc_N = C(m, N)^-1  sum_{A subset of {1..m}, |A| = N}  correct(S(A)),

a U-statistic: an unbiased estimate of the rule's expected accuracy on N fresh samples (as the
unbiased pass@k estimator is for "any of k correct").  When C(m, N) exceeds `max_subsets`, the mean
is taken over `num_resamples` seeded uniform subsets instead (unbiased too, with Monte Carlo
noise).  Rules:

  "majority"    the most common answer in A (samples without an answer do not vote); ties go to
                the answer whose best sample has the higher log p, as `MajorityVote` does; if no
                sample in A has an answer, the output is wrong.
  "best_log_p"  the answer of the sample of highest log p in A (ties: the earliest sample), as
                `BestOfN(select="log_p")` does.

With N = 1 both rules give the plain mean of c_i (pass@1); with N = m, the rule applied to all
samples.  Samples must be graded consistently: all samples with the same answer are equally
correct, and a sample without an answer is wrong.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any, Hashable, Sequence

import numpy as np

RULES = ("majority", "best_log_p")


def _subsets(m: int, n: int, max_subsets: int, num_resamples: int, seed: int) -> np.ndarray:
    """(S, n) sample indices, each row ascending: every subset, or seeded uniform ones."""
    if math.comb(m, n) <= max_subsets:
        return np.array(list(itertools.combinations(range(m), n)), dtype=np.int64).reshape(-1, n)
    rng = np.random.default_rng(seed)
    return np.sort(np.argsort(rng.random((num_resamples, m)), axis=1)[:, :n], axis=1)


def subset_accuracy(answers: Sequence[Hashable | None], correct: Sequence[bool], log_p: Sequence[float], n: int,
                    rule: str = "majority", *, max_subsets: int = 20000, num_resamples: int = 20000,
                    seed: int = 0) -> float:
    """acc_N of `rule` for one problem's samples (see the module docstring)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    m = len(answers)
    if not (len(correct) == len(log_p) == m):
        raise ValueError(f"answers, correct and log_p differ in length: {m}, {len(correct)}, {len(log_p)}")
    if not 1 <= int(n) <= m:
        raise ValueError(f"n must be in 1..{m} (the samples available), got {n}")
    correct = np.asarray(correct, dtype=bool)
    log_p = np.asarray(log_p, dtype=float)
    labels: dict[Hashable, int] = {}
    ids = np.array([-1 if a is None else labels.setdefault(a, len(labels)) for a in answers], dtype=np.int64)
    right = np.zeros(len(labels), dtype=bool)
    for k in range(len(labels)):
        flags = set(correct[ids == k].tolist())
        if len(flags) != 1:
            raise ValueError("samples with the same answer are graded differently")
        right[k] = flags.pop()
    if correct[ids == -1].any():
        raise ValueError("a sample without an answer is graded correct")
    subsets = _subsets(m, int(n), max_subsets, num_resamples, seed)
    rows = np.arange(len(subsets))
    if rule == "best_log_p":
        return float(correct[subsets[rows, np.argmax(log_p[subsets], axis=1)]].mean())
    if not labels:
        return 0.0
    chosen, likelihood = ids[subsets], log_p[subsets]
    votes = np.stack([(chosen == k).sum(axis=1) for k in range(len(labels))], axis=1)
    best = np.stack([np.where(chosen == k, likelihood, -np.inf).max(axis=1) for k in range(len(labels))], axis=1)
    top = votes.max(axis=1)
    tied = (votes == top[:, None]) & (top[:, None] > 0)
    winner = np.argmax(np.where(tied, best, -np.inf), axis=1)
    return float((right[winner] & (top > 0)).mean())


def subset_accuracy_by_problem(records: Sequence[dict[str, Any]], method: str, n: int, rule: str = "majority",
                               **options) -> np.ndarray:
    """acc_N of `rule` for every problem of `method` (task ids sorted, as `pass_at_k_by_problem`),
    from the records' `extracted` answer, `passed` and `log_p` (regrade the records first to vote
    under another grading: `mcmc_llm.evaluation.grading.regraded`).  Problem j uses seed
    `seed + j` when it must resample."""
    samples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["method"] == method:
            samples[str(record["task_id"])].append(record)
    if not samples:
        raise ValueError(f"no records of method {method!r}")
    short = {task: len(v) for task, v in samples.items() if len(v) < n}
    if short:
        raise ValueError(f"{rule}@{n} of {method!r} needs >= {n} samples per problem; some have fewer: {dict(list(short.items())[:3])}")
    seed = int(options.pop("seed", 0))
    values = []
    for j, (_, mine) in enumerate(sorted(samples.items())):
        mine = sorted(mine, key=lambda r: r.get("sample_index", 0))
        values.append(subset_accuracy([r.get("extracted") for r in mine], [bool(r["passed"]) for r in mine],
                                      [float(r["log_p"]) for r in mine], n, rule, seed=seed + j, **options))
    return np.array(values)
