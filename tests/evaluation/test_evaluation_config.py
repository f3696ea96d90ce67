"""Config validation: every problem names its key path and, for choices, the allowed values."""

from __future__ import annotations

import math
from pathlib import Path
import pytest

from mcmc_llm.evaluation import ConfigError, load_config, parse_config
from mcmc_llm.evaluation.methods import BestOfN, PowerSampling, RolloutSampling, SMCSampling, power_token_budget
from mcmc_llm.smc import SMCConfig

BASE = {
    "model": {"spec": "toy:bigram"},
    "task": {"name": "arithmetic"},
    "sampling": {"max_new_tokens": 16, "samples_per_problem": 2},
    "output": {"path": "out.jsonl"},
}


def config(*methods, **sections):
    return {**BASE, **sections, "methods": list(methods)}


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_valid_config_builds_dataclasses():
    parsed = parse_config(config(
        {"name": "p", "kind": "power", "alpha": 4.0, "block_size": 4, "mcmc_steps": 3, "cut_rule": "within-block"},
        {"name": "g", "kind": "greedy", "samples": 1},
        {"name": "cold", "kind": "low_temperature", "alpha": "inf"},
    ))
    power = parsed.method("p").method
    assert isinstance(power, PowerSampling) and power.config.cut_rule == "within-block"
    assert power.config.max_new_tokens == 16 and power.config.mcmc_steps == 3
    assert parsed.method("g").samples == 1 and parsed.method("p").samples == 2
    assert parsed.method("cold").method.rule().temperature == 0.25
    assert parsed.sampling.batch_size == 1 and parsed.scaleout.workers == 1


def test_bad_choice_names_key_and_allowed_values():
    (problem,) = problems_of(config({"name": "a", "kind": "base"}, {"name": "p", "kind": "power", "cut_rule": "unifrom"}))
    assert problem.startswith("methods[1].cut_rule:")
    assert "uniform, within-block, restart, priority, entropy" in problem and "'unifrom'" in problem


def test_unknown_keys_are_errors_with_hints():
    problems = problems_of({**config({"name": "p", "kind": "power", "alpah": 2.0}), "modle": {}, "sampling": {"sed": 1}})
    text = "\n".join(problems)
    assert "modle: unknown key (did you mean 'model'?)" in text
    assert "methods[0].alpah: unknown key (did you mean 'alpha'?)" in text
    assert "sampling.sed: unknown key (did you mean 'seed'?)" in text
    assert len(problems) == 3  # all problems reported together


def test_bad_values_name_the_key():
    problems = problems_of(config(
        {"name": "b", "kind": "base", "top_p": 1.5},
        {"name": "x", "kind": "sampler"},
        sampling={"max_new_tokens": 0, "batch_size": True},
        model={"dtype": "fp8"},
    ))
    text = "\n".join(problems)
    assert "methods[0].top_p: must be in (0, 1], got 1.5" in text
    assert "methods[1].kind: must be one of base, low_temperature, greedy, power, best_of_n, majority_vote, smc, rollout" in text
    assert "sampling.max_new_tokens: must be a positive integer, got 0" in text
    assert "sampling.batch_size: must be a positive integer, got True" in text
    assert "model.dtype: must be one of auto, float32, bfloat16, float16, float64, got 'fp8'" in text


def test_missing_required_keys_and_duplicate_names():
    data = {"methods": [{"name": "a", "kind": "base"}, {"name": "a", "kind": "greedy"}, {"kind": "base"}]}
    text = "\n".join(problems_of(data))
    assert "task.name: required key is missing" in text
    assert "output.path: required key is missing" in text
    assert "methods[2].name: required key is missing" in text
    assert "'a' is used more than once" in text
    assert problems_of({**BASE, "methods": []}) == ["methods: must be a non-empty array of tables ([[methods]] ...)"]


def test_cross_field_errors_are_prefixed_with_the_method():
    (problem,) = problems_of(config({"name": "p", "kind": "power", "block_size": 32}))
    assert problem.startswith("methods[0]: block_size 32 is larger than max_new_tokens 16")


def test_budget_matching_rules():
    parsed = parse_config(config(
        {"name": "p", "kind": "power", "block_size": 4, "mcmc_steps": 10},
        {"name": "bon", "kind": "best_of_n", "sampler": "low_temperature"},  # matches the only power method
        {"name": "vote", "kind": "majority_vote", "budget_tokens": 100, "expected_length": 10},
        {"name": "n5", "kind": "majority_vote", "n": 5},
    ))
    bon = parsed.method("bon").method
    budget = power_token_budget(parsed.method("p").method.config)
    assert isinstance(bon, BestOfN) and bon.matched_to == "p" and bon.budget_tokens == pytest.approx(budget)
    assert bon.n == round(budget / 16) and bon.rule().temperature == 0.25
    assert parsed.method("vote").method.n == 10 and parsed.method("n5").method.n == 5
    text = "\n".join(problems_of(config(
        {"name": "p", "kind": "power", "block_size": 4},
        {"name": "g", "kind": "greedy"},
        {"name": "a", "kind": "best_of_n", "n": 3, "match": "p"},
        {"name": "b", "kind": "best_of_n", "match": "g"},
        {"name": "c", "kind": "majority_vote", "select": "log_p", "n": 2},
    )))
    assert "methods[2]: give exactly one of n, budget_tokens, match (the name of a power method); got n, match" in text
    assert "methods[3].match: must name a power method, one of p; got 'g'" in text
    assert "methods[4].select: unknown key" in text
    (problem,) = problems_of(config({"name": "b", "kind": "best_of_n"}))
    assert "give exactly one of n, budget_tokens, match" in problem and "0 power methods" in problem


def test_budget_formula_matches_method_section_4():
    from mcmc_llm.drivers.power import PowerSamplerConfig

    uniform = PowerSamplerConfig(block_size=192, max_new_tokens=3072, mcmc_steps=10)
    T, B, N = 3072, 192, 10
    assert power_token_budget(uniform) == pytest.approx(N * T**2 / (4 * B) + T, rel=0.07)
    within = PowerSamplerConfig(block_size=192, max_new_tokens=3072, mcmc_steps=10, cut_rule="within-block")
    assert power_token_budget(within) == pytest.approx(N * T / 2 + T, rel=0.01)
    # exact sum when T = K * B: T + N * sum_k (kB + 1) / 2 = T + N * (B K (K + 1) / 4 + K / 2)
    K = T // B
    assert power_token_budget(uniform) == pytest.approx(T + N * (B * K * (K + 1) / 4 + K / 2))
    restart = PowerSamplerConfig(block_size=192, max_new_tokens=3072, mcmc_steps=10, cut_rule="restart")
    assert power_token_budget(restart) == pytest.approx(T + N * B * K * (K + 1) / 2)
    assert math.isclose(power_token_budget(PowerSamplerConfig(block_size=4, max_new_tokens=8, mcmc_steps=2)), 22.0)


def test_toml_errors_and_cli_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[task]\nname = "arithmetic"\n[output]\npath = "x.jsonl"\n[[methods]]\nname = "p"\nkind = "power"\ncut_rule = "nope"\n')
    with pytest.raises(ConfigError, match=r"methods\[0\]\.cut_rule: must be one of uniform"):
        load_config(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[task\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    from mcmc_llm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(bad)])
    assert exit_info.value.code == 2 and "methods[0].cut_rule: must be one of uniform" in capsys.readouterr().err


def test_smc_and_rollout_kinds():
    parsed = parse_config(config(
        {"name": "smc", "kind": "smc", "alpha": 2.0, "particles": 8, "resampling": "residual", "ess_threshold": 0.25,
         "proposal_temperature": 0.7, "ramp_tokens": 4, "rejuvenation_steps": 1, "rejuvenation_cut_rule": "within-block"},
        {"name": "smc-default", "kind": "smc", "max_new_tokens": 8},
        {"name": "roll", "kind": "rollout", "alpha": 3, "top_candidates": 5, "rollouts": 2, "jackknife": False,
         "proposal_temperature": 0.5, "samples": 1},
    ))
    smc = parsed.method("smc").method
    assert isinstance(smc, SMCSampling) and smc.max_new_tokens == 16  # from [sampling]
    assert smc.config == SMCConfig(
        alpha=2.0, max_new_tokens=16, num_particles=8, resampling="residual", ess_threshold=0.25,
        proposal_temperature=0.7, ramp_tokens=4, rejuvenation_steps=1, rejuvenation_cut_rule="within-block",
    )
    assert parsed.method("smc-default").method == SMCSampling(SMCConfig(max_new_tokens=8))
    roll = parsed.method("roll").method
    assert isinstance(roll, RolloutSampling) and parsed.method("roll").samples == 1
    assert (roll.config.alpha, roll.config.top_candidates, roll.config.rollouts, roll.config.jackknife, roll.max_new_tokens) == (3, 5, 2, False, 16)
    assert roll.config.temperature == 0.5
    assert parsed.fingerprint("smc") != parsed.fingerprint("smc-default")


def test_smc_and_rollout_bad_values_name_the_key():
    text = "\n".join(problems_of(config(
        {"name": "s", "kind": "smc", "alpha": "inf", "particles": 0, "resampling": "sytematic", "ess_threshold": 1.5,
         "rejuvenation_cut_rule": "nope", "ramp_tokens": -1, "block_size": 4},
        {"name": "r", "kind": "rollout", "alpha": math.inf, "rollouts": 0, "top_candidates": 2.5, "jackknife": "yes",
         "proposal_temperature": 0, "particles": 4},
        {"name": "t", "kind": "smc", "ramp_tokens": 32},
    )))
    assert "methods[0].alpha: must be a finite number > 0" in text
    assert "methods[0].particles: must be a positive integer, got 0" in text
    assert "methods[0].resampling: must be one of multinomial, stratified, systematic, residual, got 'sytematic'" in text
    assert "methods[0].ess_threshold: must be in [0, 1], got 1.5" in text
    assert "methods[0].rejuvenation_cut_rule: must be one of uniform, within-block, restart, priority, entropy" in text
    assert "methods[0].ramp_tokens: must be a non-negative integer, got -1" in text
    assert "methods[0].block_size: unknown key" in text and "rejuvenation_cut_rule" in text
    assert "methods[1].alpha: must be a finite number > 0" in text
    assert "methods[1].rollouts: must be a positive integer, got 0" in text
    assert "methods[1].top_candidates: must be a positive integer, got 2.5" in text
    assert "methods[1].jackknife: must be true or false, got 'yes'" in text
    assert "methods[1].proposal_temperature: must be a finite number > 0, got 0" in text
    assert "methods[1].particles: unknown key; allowed: name, kind, samples, max_new_tokens, alpha, top_candidates" in text
    assert "methods[2]: ramp_tokens 32 exceeds max_new_tokens 16" in text


def test_every_smc_and_rollout_config_field_is_a_key_and_new_keys_keep_fingerprints():
    smc_keys = {"alpha": 2.0, "particles": 4, "resampling": "stratified", "ess_threshold": 0.3, "proposal_temperature": 0.9,
                "ramp_tokens": 2, "rejuvenation_steps": 1, "rejuvenation_cut_rule": "restart", "rejuvenate": "resampling"}
    parsed = parse_config(config({"name": "s", "kind": "smc", **smc_keys}, {"name": "plain", "kind": "smc"}))
    assert parsed.method("s").method.config == SMCConfig(
        alpha=2.0, max_new_tokens=16, num_particles=4, resampling="stratified", ess_threshold=0.3, proposal_temperature=0.9,
        ramp_tokens=2, rejuvenation_steps=1, rejuvenation_cut_rule="restart", rejuvenate="resampling",
    )
    assert len(SMCSampling.keys()) == len(smc_keys)
    # `rejuvenate` was added after results were committed: left at its default, it is not in the
    # settings, so those results keep their fingerprints (this one is the committed samplers.toml smc method's)
    committed = config({"name": "smc", "kind": "smc", "alpha": 4.0, "particles": 5, "resampling": "systematic",
                        "ess_threshold": 0.5}, model={"spec": "default", "dtype": "bfloat16"},
                       task={"name": "arithmetic", "seed": 0, "options": {"difficulty": 1}},
                       sampling={"max_new_tokens": 96, "samples_per_problem": 4, "seed": 3, "batch_size": 4,
                                 "problems_per_call": 12})
    assert parse_config(committed).fingerprint("smc") == "35f17593e7841faa"
    committed["methods"][0]["rejuvenate"] = "end"  # the default, given explicitly
    assert parse_config(committed).fingerprint("smc") == "35f17593e7841faa"
    committed["methods"][0]["rejuvenate"] = "resampling"
    assert parse_config(committed).fingerprint("smc") != "35f17593e7841faa"


def test_bad_rejuvenate_names_the_value_and_the_allowed_ones():
    text = "\n".join(problems_of(config({"name": "s", "kind": "smc", "rejuvenate": "always"})))
    assert "methods[0].rejuvenate: must be one of end, resampling, got 'always'" in text


def test_smoke_document_shrinks_every_size_and_keeps_the_methods():
    from mcmc_llm.evaluation import parse_config, read_document, smoke_document

    path = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "cpu" / "samplers.toml"
    document = read_document(path)
    smoke = smoke_document(document)
    assert document["sampling"]["max_new_tokens"] == 96  # the original is left alone
    config = parse_config(smoke, str(path))
    assert config.task.subset == 2 and config.sampling.max_new_tokens == 24
    assert config.sampling.problems_per_call == 2 and config.sampling.batch_size == 2
    assert [m.name for m in config.methods] == [m["name"] for m in document["methods"]]
    assert all(m.samples <= 2 for m in config.methods)
    power = config.method("power_entropy").method.config
    assert (power.block_size, power.mcmc_steps, power.cut_rule) == (8, 2, "entropy")
    assert config.method("smc").method.config.num_particles == 2
    rollout = config.method("rollout").method.config
    assert (rollout.top_candidates, rollout.rollouts, rollout.horizon) == (2, 2, 4)
