"""`mcmc-llm sample`'s sampler flags are built from the config dataclasses (`commands.sampler_flags`):
one flag per field, grouped by sampler in --help, and each run's config read back from them."""

from __future__ import annotations

import dataclasses

import pytest

from mcmc_llm.cli import build_parser
from mcmc_llm.commands.sampler_flags import CLI_NAMES, GROUPS, SAMPLERS, flag_of, sampler_config, shared_fields
from mcmc_llm.drivers.power_config import PowerSamplerConfig
from mcmc_llm.rollout import RolloutConfig
from mcmc_llm.smc import SMCConfig


@pytest.fixture(scope="module")
def parser():
    return build_parser().commands["sample"]


def _groups(parser) -> dict[str, set[str]]:
    """Group title -> the option strings of its flags."""
    return {group.title: {o for action in group._group_actions for o in action.option_strings}
            for group in parser._action_groups}


def test_every_field_is_a_flag_of_its_samplers_group(parser):
    groups = _groups(parser)
    shared = set(shared_fields())
    assert shared == {"alpha", "max_new_tokens", "proposal_temperature"}
    for sampler, config_class in SAMPLERS.items():
        for field in dataclasses.fields(config_class):
            dest = CLI_NAMES.get(field.name, field.name)
            flag = ("--no-" + dest.replace("_", "-")) if field.default is True else flag_of(dest)
            title = "sampling (every sampler)" if field.name in shared else GROUPS[sampler]
            assert flag in groups[title], f"{config_class.__name__}.{field.name}: {flag} not in group {title!r}"


def test_shared_fields_have_one_default(parser):
    for name in shared_fields():
        defaults = {config.__dataclass_fields__[name].default for config in SAMPLERS.values()}
        assert len(defaults) == 1, f"{name} has different defaults in the sampler configs: {defaults}"


def test_help_shows_the_groups_in_order(parser):
    text = parser.format_help()
    positions = [text.index(f"\n{title}:") for title in ("sampling (every sampler)", *GROUPS.values())]
    assert positions == sorted(positions)
    assert "--kernel" not in text and "--rejuvenation-kernel" not in text  # old names stay hidden


def test_defaults_are_the_configs(parser):
    for sampler, config_class in SAMPLERS.items():
        assert sampler_config(parser.parse_args(["--sampler", sampler])) == config_class()


def test_flags_reach_the_config(parser):
    args = parser.parse_args(["--alpha", "inf", "--block-size", "2", "--max-new-tokens", "4", "--mcmc-steps", "0",
                              "--cut-rule", "restart", "--top-k", "3", "--top-p", "0.9", "--cut-sharpness", "2",
                              "--ratio", "published", "--batching", "lockstep", "--no-prefetch", "--no-early-reject",
                              "--proposal-temperature", "0.5"])
    assert sampler_config(args) == PowerSamplerConfig(
        alpha=float("inf"), block_size=2, max_new_tokens=4, mcmc_steps=0, cut_rule="restart", top_k=3, top_p=0.9,
        cut_sharpness=2.0, ratio="published", batching="lockstep", prefetch=False, early_reject=False,
        proposal_temperature=0.5)
    smc = parser.parse_args(["--sampler", "smc", "--particles", "5", "--resampling", "residual", "--ess-threshold",
                             "0.25", "--ramp-tokens", "3", "--rejuvenation-steps", "2", "--rejuvenation-cut-rule",
                             "within-block", "--rejuvenate", "resampling"])
    assert sampler_config(smc) == SMCConfig(num_particles=5, resampling="residual", ess_threshold=0.25, ramp_tokens=3,
                                            rejuvenation_steps=2, rejuvenation_cut_rule="within-block",
                                            rejuvenate="resampling")
    rollout = parser.parse_args(["--sampler", "rollout", "--top-candidates", "2", "--rollouts", "3", "--no-jackknife",
                                 "--horizon", "1"])
    assert sampler_config(rollout) == RolloutConfig(top_candidates=2, rollouts=3, jackknife=False, horizon=1)


def test_old_flags_still_set_the_field(parser):
    with pytest.warns(Warning, match="old name"):
        args = parser.parse_args(["--kernel", "restart", "--rejuvenation-kernel", "priority"])
    assert (args.cut_rule, args.rejuvenation_cut_rule) == ("restart", "priority")
    assert parser.parse_args([]).cut_rule == "uniform"
