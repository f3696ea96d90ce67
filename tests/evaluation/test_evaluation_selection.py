"""Majority vote and best-of-N over subsets of stored samples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mcmc_llm.evaluation.selection import subset_accuracy, subset_accuracy_by_problem


def test_majority_over_subsets_by_hand():
    # answers a, a, b (a correct); log p makes b the better-supported answer on ties
    answers, correct, log_p = ["a", "a", "b"], [True, True, False], [-3.0, -2.0, -1.0]
    assert subset_accuracy(answers, correct, log_p, 1) == pytest.approx(2 / 3)
    # {0,1}: a; {0,2}: tie, b has the higher log p; {1,2}: tie, b again
    assert subset_accuracy(answers, correct, log_p, 2) == pytest.approx(1 / 3)
    assert subset_accuracy(answers, correct, log_p, 3) == 1.0
    assert subset_accuracy(answers, correct, [-1.0, -2.0, -3.0], 2) == 1.0
    # best of N by log p: the most likely sample of the subset
    assert subset_accuracy(answers, correct, log_p, 2, "best_log_p") == pytest.approx(1 / 3)
    assert subset_accuracy(answers, correct, [-1.0, -2.0, -3.0], 2, "best_log_p") == 1.0


def test_samples_without_an_answer_do_not_vote():
    answers, correct, log_p = [None, None, 7], [False, False, True], [0.0, 0.0, -5.0]
    assert subset_accuracy(answers, correct, log_p, 2) == pytest.approx(2 / 3)  # right whenever sample 2 is in
    assert subset_accuracy(answers, correct, log_p, 2, "best_log_p") == 0.0
    assert subset_accuracy([None, None], [False, False], [0.0, 0.0], 2) == 0.0
    with pytest.raises(ValueError, match="without an answer is graded correct"):
        subset_accuracy([None], [True], [0.0], 1)
    with pytest.raises(ValueError, match="same answer are graded differently"):
        subset_accuracy([1, 1], [True, False], [0.0, 0.0], 1)
    with pytest.raises(ValueError, match="n must be in 1..2"):
        subset_accuracy([1, 2], [True, False], [0.0, 0.0], 3)


def brute_force_majority(answers, correct, log_p, n):
    scores = []
    for subset in itertools.combinations(range(len(answers)), n):
        votes = {}
        for i in subset:
            if answers[i] is not None:
                votes[answers[i]] = votes.get(answers[i], 0) + 1
        if not votes:
            scores.append(False)
            continue
        top = max(votes.values())
        best = max((log_p[i], answers[i]) for i in subset if answers[i] is not None and votes[answers[i]] == top)
        scores.append(next(correct[i] for i in subset if answers[i] == best[1]))
    return float(np.mean(scores))


def test_exact_mean_matches_brute_force_and_resampling():
    rng = np.random.default_rng(0)
    answers = [None if x == 3 else int(x) for x in rng.integers(0, 4, size=10)]
    correct = [a == 1 for a in answers]
    log_p = rng.normal(size=10).tolist()
    for n in (1, 2, 4, 7, 10):
        exact = subset_accuracy(answers, correct, log_p, n)
        assert exact == pytest.approx(brute_force_majority(answers, correct, log_p, n))
        sampled = subset_accuracy(answers, correct, log_p, n, max_subsets=0, num_resamples=20000, seed=1)
        assert sampled == pytest.approx(exact, abs=0.02)
    assert subset_accuracy(answers, correct, log_p, 1) == pytest.approx(np.mean(correct))
    # best-of-N: P(the best of a subset is sample i) = C(rank_i - 1, n - 1) / C(10, n)  (rank 1 = least likely)
    ranks = np.argsort(np.argsort(log_p)) + 1
    expected = sum(c * math.comb(int(r) - 1, 3) for c, r in zip(correct, ranks)) / math.comb(10, 4)
    assert subset_accuracy(answers, correct, log_p, 4, "best_log_p") == pytest.approx(expected)


def test_by_problem_uses_sorted_task_ids():
    recs = [{"method": "m", "task_id": t, "sample_index": i, "extracted": a, "passed": a == "1", "log_p": -i}
            for t, answers in (("b", ["1", "1", "2"]), ("a", ["2", "2", "1"])) for i, a in enumerate(answers)]
    np.testing.assert_allclose(subset_accuracy_by_problem(recs, "m", 1), [1 / 3, 2 / 3])
    np.testing.assert_allclose(subset_accuracy_by_problem(recs, "m", 3), [0.0, 1.0])
    with pytest.raises(ValueError, match="majority@4 of 'm' needs >= 4"):
        subset_accuracy_by_problem(recs, "m", 4)
