"""Exact laws over S_n: enumeration, the four laws, exact sampling and the `exact` CLI command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mcmc_llm import cli
from mcmc_llm.lm.exact import (
    base_law,
    nested_law,
    power_law,
    sample_exact,
    tempered_law,
)
from mcmc_llm.lm.exact.support import ExactLaw, enumerate_support, support_size_bound
from mcmc_llm.lm.protocol import CallableLM, TokenBatch
from mcmc_llm.lm.toy import TOY_MODELS, DerailLM, load_toy

REPO = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------------------------
# brute force, one context at a time, independent of the breadth-first enumeration


def next_logprobs(lm, context) -> list[float]:
    state = lm.start(TokenBatch.from_lists([list(context)]))
    return torch.log_softmax(state.logprobs[0].to(torch.float64), -1).tolist()


def brute_completions(lm, prompt, prefix, cap, weight):
    """[(c, sum_t weight(log p(. | .), c_t))] over completions c of `prefix` with at most `cap`
    tokens: ending with EOS, or exactly `cap` tokens without EOS.  Zero-probability tokens skipped."""
    out = []

    def walk(c, acc):
        if len(c) == cap:
            out.append((tuple(c), acc))
            return
        logprobs = next_logprobs(lm, list(prompt) + list(prefix) + list(c))
        for v, lp in enumerate(logprobs):
            if lp == -math.inf:
                continue
            term = weight(logprobs, v)
            if v in lm.eos_token_ids:
                out.append((tuple(c) + (v,), acc + term))
            else:
                walk(c + [v], acc + term)

    walk([], 0.0)
    return out


def brute_base(lm, n, prompt=()):
    return {x: math.exp(lp) for x, lp in brute_completions(lm, prompt, (), n, lambda lps, v: lps[v])}


def brute_tempered(lm, n, tau, prompt=()):
    def weight(lps, v):
        scaled = [lp / tau for lp in lps if lp > -math.inf]
        top = max(scaled)
        return lps[v] / tau - (top + math.log(sum(math.exp(s - top) for s in scaled)))

    return {x: math.exp(lp) for x, lp in brute_completions(lm, prompt, (), n, weight)}


def brute_nested(lm, n, alpha, block, prompt=()):
    law = {}

    def stage(prefix, mass):
        cap = min(block, n - len(prefix))
        completions = brute_completions(lm, prompt, prefix, cap, lambda lps, v: lps[v])
        weights = [alpha * lp for _, lp in completions]
        top = max(weights)
        norm = top + math.log(sum(math.exp(w - top) for w in weights))
        for (c, _), w in zip(completions, weights):
            x, m = prefix + c, mass * math.exp(w - norm)
            if (c and c[-1] in lm.eos_token_ids) or len(x) == n:
                law[x] = law.get(x, 0.0) + m
            else:
                stage(x, m)

    stage((), 1.0)
    return law


def assert_same_law(law: ExactLaw, expected: dict, tol=1e-12):
    got = law.as_dict()
    assert set(got) == set(expected)
    for x, p in expected.items():
        assert got[x] == pytest.approx(p, abs=tol, rel=1e-9), x


# ---------------------------------------------------------------------------------------------
# the laws


@pytest.mark.parametrize("name", sorted(TOY_MODELS))
@pytest.mark.parametrize("prompt", [(), (1, 2)])
def test_base_law_sums_to_one_and_matches_brute_force(name, prompt):
    lm = load_toy(name)
    law = base_law(lm, 4, prompt)
    assert abs(law.probs().sum() - 1) < 1e-9
    assert abs(np.exp(law.base_log_probs).sum() - 1) < 1e-9  # p itself, unrenormalised, sums to 1
    assert_same_law(law, brute_base(lm, 4, prompt))
    assert law.sequences == sorted(law.sequences)  # deterministic lexicographic order
    for x in law.sequences:  # S_n: EOS only as the last token, else exactly n tokens
        assert 1 <= len(x) <= 4
        assert all(t not in lm.eos_token_ids for t in x[:-1])
        assert x[-1] in lm.eos_token_ids or len(x) == 4


def test_support_size_counts_every_sequence_when_no_token_has_probability_zero():
    lm = load_toy("bigram")
    for n in range(0, 6):
        assert len(enumerate_support(lm, n)) == support_size_bound(5, 1, n)
    assert enumerate_support(lm, 0).as_dict() == {(): 1.0}


@pytest.mark.parametrize("name", sorted(TOY_MODELS))
def test_power_alpha_one_is_base_and_nested_full_block_is_power(name):
    lm = load_toy(name)
    n = 5
    support = enumerate_support(lm, n)
    base = base_law(lm, n, support=support)
    assert power_law(lm, n, 1.0, support=support).tv(base) < 1e-12
    assert tempered_law(lm, n, 1.0, support=support).tv(base) < 1e-12
    for alpha in (0.5, 2.0, 4.0):
        power = power_law(lm, n, alpha, support=support)
        assert abs(power.probs().sum() - 1) < 1e-9
        expected = {x: p**alpha for x, p in base.as_dict().items()}
        total = sum(expected.values())
        assert_same_law(power, {x: w / total for x, w in expected.items()})
        assert nested_law(lm, n, alpha, n, support=support).tv(power) < 1e-12
        # plain sampling at temperature 1/alpha is the nested law with one-token blocks
        assert tempered_law(lm, n, 1 / alpha, support=support).tv(nested_law(lm, n, alpha, 1, support=support)) < 1e-12


@pytest.mark.parametrize("name,n,block", [("tiny", 5, 2), ("derail", 5, 3), ("trigram", 4, 3), ("bigram", 4, 1)])
def test_nested_law_matches_block_by_block_brute_force(name, n, block):
    lm = load_toy(name)
    law = nested_law(lm, n, 3.0, block, prompt=(2,))
    assert abs(law.probs().sum() - 1) < 1e-9
    assert_same_law(law, brute_nested(lm, n, 3.0, block, prompt=(2,)))


@pytest.mark.parametrize("name", sorted(TOY_MODELS))
def test_tempered_law_matches_per_token_brute_force(name):
    lm = load_toy(name)
    assert_same_law(tempered_law(lm, 4, 0.25), brute_tempered(lm, 4, 0.25))


def test_nested_law_differs_from_power_law():
    # bigram toy, n = 4, two blocks of 2, alpha = 4: the within-block kernel's limit is far from pi_alpha
    lm = load_toy("bigram")
    support = enumerate_support(lm, 4)
    power = power_law(lm, 4, 4.0, support=support)
    nested = nested_law(lm, 4, 4.0, 2, support=support)
    assert nested.tv(power) == pytest.approx(0.58209782, abs=1e-6)
    assert nested.tv(power) > 0.01


def test_power_law_favours_the_good_token_and_low_temperature_does_not():
    lm, n, alpha = DerailLM(), 4, 4.0
    support = enumerate_support(lm, n)
    starts_good = lambda x: x[0] == DerailLM.GOOD  # noqa: E731
    base = base_law(lm, n, support=support).mass(starts_good)
    power = power_law(lm, n, alpha, support=support).mass(starts_good)
    tempered = tempered_law(lm, n, 1 / alpha, support=support).mass(starts_good)
    assert base == pytest.approx(0.3)
    # per-token tempering only sees the first step: 0.3^4 / (0.3^4 + 2 * 0.35^4)
    assert tempered == pytest.approx(0.3**4 / (0.3**4 + 2 * 0.35**4), rel=1e-12)
    assert tempered == pytest.approx(0.2125287, abs=1e-6)
    assert power == pytest.approx(0.8504764, abs=1e-6)
    assert power > 0.8 > 0.25 > tempered  # power sampling prefers the good token, low temperature the errors
    assert power == pytest.approx(sum(p for x, p in brute_power(lm, n, alpha).items() if starts_good(x)), rel=1e-9)


def brute_power(lm, n, alpha, prompt=()):
    weights = {x: p**alpha for x, p in brute_base(lm, n, prompt).items()}
    total = sum(weights.values())
    return {x: w / total for x, w in weights.items()}


def test_enumeration_works_on_a_callable_lm():
    calls = []

    def fn(prefixes):
        calls.append(len(prefixes))
        rows = []
        for prefix in prefixes:
            last = prefix[-1] if prefix else 3
            rows.append([0.1 * len(prefix) - 1.0, 0.5 * last, 1.0 - 0.3 * last, 0.2])  # logits
        return torch.tensor(rows)

    lm = CallableLM(fn, vocab_size=4, eos_token_ids=[0])
    law = base_law(lm, 5, prompt=[2])
    assert len(law) == support_size_bound(4, 1, 5)
    assert abs(law.probs().sum() - 1) < 1e-9
    assert len(calls) == 5  # one batched call per prefix length
    assert_same_law(law, brute_base(lm, 5, prompt=[2]))
    assert_same_law(power_law(lm, 5, 2.0, prompt=[2]), brute_power(lm, 5, 2.0, [2]))


def test_support_guard_refuses_large_supports_with_the_numbers():
    lm = load_toy("bigram")
    with pytest.raises(ValueError, match=r"S_7 has more than max_support = 1000 sequences: at least \d+"):
        enumerate_support(lm, 7, max_support=1000)
    with pytest.raises(ValueError, match="max_support = 1000"):
        power_law(lm, 7, 4.0, max_support=1000)
    assert len(enumerate_support(lm, 4, max_support=support_size_bound(5, 1, 4))) == 341


def test_a_large_support_enumerates_quickly():
    law = base_law(load_toy("bigram"), 8)  # 87381 sequences
    assert len(law) == 87381
    assert abs(law.probs().sum() - 1) < 1e-9


def test_invalid_arguments_are_refused():
    lm = load_toy("tiny")
    for alpha in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            power_law(lm, 3, alpha)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        tempered_law(lm, 3, 0.0)
    with pytest.raises(ValueError, match="block_size must be between 1 and max_new_tokens = 3, got block_size = 4"):
        nested_law(lm, 3, 2.0, 4)
    with pytest.raises(ValueError, match="got block_size = 0"):
        nested_law(lm, 3, 2.0, 0)
    with pytest.raises(ValueError, match=r"prompt token 7 is outside the vocabulary \[0, 3\)"):
        base_law(lm, 3, prompt=[1, 7])
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer, got -1"):
        base_law(lm, -1)
    with pytest.raises(ValueError, match="the given support was enumerated for max_new_tokens = 3"):
        power_law(lm, 4, 2.0, support=enumerate_support(lm, 3))


def test_tv_against_laws_counts_and_samples():
    lm = load_toy("tiny")
    law = base_law(lm, 2)
    assert law.tv(law) == 0.0
    assert law.tv(law.as_dict()) < 1e-15
    first = law.sequences[0]
    assert law.tv([list(first)] * 3) == pytest.approx(1 - law.prob(first))
    assert law.tv({first: 5}) == pytest.approx(1 - law.prob(first))
    assert law.tv({(9, 9): 1}) == pytest.approx(1.0)
    assert law.prob((9, 9)) == 0.0


def test_sample_exact_draws_from_the_law_reproducibly():
    law = power_law(load_toy("tiny"), 3, 2.0)
    draws = sample_exact(law, torch.Generator().manual_seed(0), 20000)
    assert draws == sample_exact(law, torch.Generator().manual_seed(0), 20000)
    assert all(isinstance(x, tuple) for x in draws)
    assert law.tv(draws) < 0.02
    assert sample_exact(law, torch.Generator().manual_seed(0), 0) == []


# ---------------------------------------------------------------------------------------------
# the CLI


def run_cli(capsys, *args):
    code = cli.main(["exact", *args])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()]


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--law", "base"], lambda lm: base_law(lm, 3, (1,))),
        (["--law", "power", "--alpha", "2.5"], lambda lm: power_law(lm, 3, 2.5, (1,))),
        (["--law", "power"], lambda lm: power_law(lm, 3, 4.0, (1,))),
        (["--law", "nested", "--block-size", "2"], lambda lm: nested_law(lm, 3, 4.0, 2, (1,))),
        (["--law", "tempered", "--temperature", "0.5"], lambda lm: tempered_law(lm, 3, 0.5, (1,))),
        (["--law", "tempered", "--alpha", "2"], lambda lm: tempered_law(lm, 3, 0.5, (1,))),
    ],
)
def test_cli_prints_the_exact_law(capsys, flags, expected):
    code, rows = run_cli(capsys, "--model", "toy:trigram", "--max-new-tokens", "3", "--prompt", "1", *flags)
    assert code == 0
    law = expected(load_toy("trigram"))
    assert [tuple(row["tokens"]) for row in rows] == law.sequences
    assert sum(row["prob"] for row in rows) == pytest.approx(1.0, abs=1e-9)
    assert law.tv({tuple(row["tokens"]): row["prob"] for row in rows}) < 1e-12


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--model", "toy:nope", "--max-new-tokens", "2"], "nope"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--law", "nested"], "--law nested requires --block-size"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--law", "nested", "--block-size", "3"],
         "--block-size must be between 1 and --max-new-tokens = 2, got --block-size 3"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--law", "nested", "--block-size", "0"], "got --block-size 0"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--alpha", "0"], "--alpha must be a finite number > 0, got 0.0"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--alpha", "inf"], "--alpha must be a finite number > 0"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--law", "tempered", "--temperature", "-1"],
         "--temperature must be a finite number > 0"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--temperature", "0.5"], "--temperature applies only to --law tempered"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--block-size", "1"], "--block-size applies only to --law nested"),
        (["--model", "toy:tiny", "--max-new-tokens", "0"], "--max-new-tokens must be a positive integer, got 0"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--prompt", "1 x"], "--prompt must be integer token ids"),
        (["--model", "toy:tiny", "--max-new-tokens", "2", "--prompt", "1 5"], r"--prompt token ids must be in [0, 3)"),
        (["--model", "toy:bigram", "--max-new-tokens", "9", "--max-support", "100"], "more than max_support = 100"),
    ],
)
def test_cli_rejects_bad_input_clearly(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["exact", *flags])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert "Traceback" not in captured.err
    if message == "nope":  # an unknown toy name lists the available ones
        assert all(name in captured.err for name in TOY_MODELS)


def test_cli_help_documents_flags_and_toy_models(capsys):
    with pytest.raises(SystemExit):
        cli.main(["exact", "--help"])
    text = capsys.readouterr().out
    for flag in ("--model", "--max-new-tokens", "--law", "--alpha", "--block-size", "--temperature", "--prompt", "--max-support"):
        assert flag in text
    for name in TOY_MODELS:
        assert f"toy:{name}" in text


def test_cli_entry_point_in_a_subprocess():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "mcmc_llm.cli", "exact", "--model", "toy:derail", "--max-new-tokens", "3",
         "--law", "nested", "--alpha", "4", "--block-size", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(row["prob"] for row in rows) == pytest.approx(1.0, abs=1e-9)
    law = nested_law(DerailLM(), 3, 4.0, 2)
    assert law.tv({tuple(row["tokens"]): row["prob"] for row in rows}) < 1e-12


def test_the_package_offers_every_name_of_its_modules():
    """`from mcmc_llm.lm.exact import ...` gives the laws (`lm.exact.laws`) and the support
    (`lm.exact.support`), the same objects."""
    import mcmc_llm.lm.exact as package
    from mcmc_llm.lm.exact import laws, support

    for module in (laws, support):
        for name in module.__all__:
            assert getattr(package, name) is getattr(module, name), name
            assert name in package.__all__, name
