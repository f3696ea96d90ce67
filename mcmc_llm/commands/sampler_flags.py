"""The sampler flags of `mcmc-llm sample`, built from the config dataclasses, and the configs built from them.

Each field of `PowerSamplerConfig` (`--sampler mh`), `SMCConfig` (`smc`) and `RolloutConfig`
(`rollout`) is one flag, `--name-with-dashes` (`CLI_NAMES` lists the fields whose flag has
another name), stored under the field's name (or that other name).  Its argparse type comes from
the field's annotation and its default from the field's default:

    bool, default True      --no-NAME (store_false)        bool, default False   --NAME (store_true)
    int, int | None         `argparse_integer(flag, minimum)` (`mcmc_llm.core.validate`)
    float, float | None     float (or the `Flag`'s own `type`)
    anything else           a string, one of the `Flag`'s `choices`

and its help from `FLAGS` (one `Flag` per field: a field without one is a ValueError when the
parser is built).  The fields every config has (alpha, max_new_tokens, proposal_temperature) are
flags of the shared group, the others of their sampler's group ("power sampling (MH)", "Power-SMC",
"rollouts"), so `mcmc-llm sample --help` shows them grouped.  `sampler_config(args)` builds the
config of `args.sampler` by reading every field of its class from its flag (`config_from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Mapping, Sequence

from mcmc_llm.commands.common import old_flag
from mcmc_llm.core.validate import argparse_integer, argparse_number
from mcmc_llm.drivers.power_config import BATCHING, RATIOS, PowerSamplerConfig
from mcmc_llm.proposals.cut_rules import CUT_RULES
from mcmc_llm.rollout.sampler import RolloutConfig
from mcmc_llm.smc.power_smc import REJUVENATION_POINTS, SMCConfig
from mcmc_llm.smc.resampling import RESAMPLING_SCHEMES


@dataclasses.dataclass(frozen=True)
class Flag:
    """The command-line side of one config field: its help text; for an integer field the smallest
    value (`minimum`); for a string field the allowed values (`choices`); or an argparse `type`
    that replaces the one the annotation gives."""

    help: str
    minimum: int | None = 1
    choices: Sequence[str] | None = None
    type: Callable[[str], Any] | None = None


#: Config fields whose `sample` flag has another name (field -> flag name and argparse dest).
CLI_NAMES = {"num_particles": "particles"}

#: The sampler behind each `--sampler` value, and its argparse group.
SAMPLERS = {"mh": PowerSamplerConfig, "smc": SMCConfig, "rollout": RolloutConfig}
GROUPS = {"mh": "power sampling (MH)", "smc": "Power-SMC", "rollout": "rollouts"}

FLAGS: dict[str, Flag] = {
    # every sampler
    "alpha": Flag("power alpha > 0 of the target p^alpha; 'inf' = max-swap (mh only)",
                  type=argparse_number("--alpha", 0, strict=True, allow_inf=True)),
    "max_new_tokens": Flag("length cap T_max"),
    "proposal_temperature": Flag("proposal temperature (default 1/alpha; 0.25 for alpha=inf)"),
    # power sampling (MH)
    "block_size": Flag("tokens per block B"),
    "mcmc_steps": Flag("MH steps per block N_MCMC", minimum=0),
    "cut_rule": Flag("cut rule of the suffix proposal: uniform (paper), within-block (author's note), restart, "
                     "priority, entropy", choices=CUT_RULES),
    "top_k": Flag("truncate proposals to the top k tokens (default: full support, exact)"),
    "top_p": Flag("nucleus truncation of proposals (default: full support, exact)"),
    "cut_sharpness": Flag("beta of the priority and entropy cut rules"),
    "ratio": Flag("MH ratio: exact; published (the published code's biased ratio in our chain); or reference (a "
                  "copy of the published code's whole chain: proposal length, top-k 50, ratio, early stop at EOS). "
                  "The last two are for comparisons only", choices=RATIOS),
    "batching": Flag("continuous: chains step asynchronously and refill one batch (faster); lockstep: all chains take "
                     "each MH step together. Same chains for a seed (per-chain random streams)", choices=BATCHING),
    "prefetch": Flag("continuous batching: leave idle rows idle instead of pre-fetching each chain's next proposal "
                     "for both outcomes of its MH step (same chains for a seed)"),
    "early_reject": Flag("decode every proposal to its end, even once its move is certain to be rejected (early "
                         "rejection is exact: the same chains for a seed, fewer tokens)"),
    # Power-SMC
    "num_particles": Flag("particles per run"),
    "resampling": Flag("resampling scheme", choices=tuple(RESAMPLING_SCHEMES)),
    "ess_threshold": Flag("resample when ESS < this fraction of the particles"),
    "ramp_tokens": Flag("raise the exponent from 1 to alpha over this many tokens (0: alpha from the start)",
                        minimum=0),
    "rejuvenation_steps": Flag("MH rejuvenation steps per rejuvenation (0: none)", minimum=0),
    "rejuvenation_cut_rule": Flag("cut rule of the rejuvenation moves", choices=CUT_RULES),
    "rejuvenate": Flag("when to rejuvenate: end (once, after a final resampling) or resampling (also during the run: "
                       "resample and move all of a run's particles at the steps where an independent pilot run "
                       "without moves resampled: a schedule fixed in advance, which keeps Z_hat unbiased; the pilot "
                       "roughly doubles the generation cost)", choices=REJUVENATION_POINTS),
    # rollouts
    "top_candidates": Flag("candidate next tokens K (by base probability)"),
    "rollouts": Flag("rollouts M per candidate"),
    "jackknife": Flag("no jackknife correction of the next-token probabilities"),
    "horizon": Flag("stop rollouts after this many tokens (default: run to EOS or the cap)"),
}

#: Renamed flags (old name -> field), hidden from --help, each printing one deprecation line.
OLD_FLAGS = {"mh": {"--kernel": "cut_rule"}, "smc": {"--rejuvenation-kernel": "rejuvenation_cut_rule"}}


def flag_of(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _field_type(annotation: Any) -> Any:
    """`int` for `int | None`; the annotation itself when it is not an optional type."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        return kinds[0] if len(kinds) == 1 else Any
    return annotation


def add_config_flags(group, config_class: type, names: Sequence[str], flags: Mapping[str, Flag],
                     renamed: Mapping[str, str]) -> None:
    """The flags of the fields `names` of `config_class` (module docstring), added to `group`."""
    annotations = typing.get_type_hints(config_class)
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    for name in names:
        if name not in flags:
            raise ValueError(f"{config_class.__name__}.{name} has no command-line help: add a Flag to FLAGS")
        spec, dest, default = flags[name], renamed.get(name, name), fields[name].default
        kind = _field_type(annotations[name])
        if kind is bool:
            flag = "--no-" + dest.replace("_", "-") if default else flag_of(dest)
            group.add_argument(flag, dest=dest, action="store_false" if default else "store_true", help=spec.help)
            continue
        parse = spec.type or (argparse_integer(flag_of(dest), spec.minimum) if kind is int else
                              float if kind is float else None)
        group.add_argument(flag_of(dest), dest=dest, type=parse, choices=spec.choices, default=default, help=spec.help)


def config_from_args(config_class: type, args: argparse.Namespace, renamed: Mapping[str, str]):
    """`config_class` with every field read from `args` (the field's name, or its `renamed` dest)."""
    return config_class(**{
        field.name: getattr(args, renamed.get(field.name, field.name)) for field in dataclasses.fields(config_class)
    })


def shared_fields() -> list[str]:
    """The fields every sampler's config has, in the order of `PowerSamplerConfig`."""
    names = [{field.name for field in dataclasses.fields(config)} for config in SAMPLERS.values()]
    return [field.name for field in dataclasses.fields(PowerSamplerConfig) if all(field.name in n for n in names)]


def add_sampler_arguments(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """--sampler, --chains, --seed and every config field's flag, in a shared group and one group per
    sampler (returned by sampler name, "shared" for the shared one, so a command can add its own flags)."""
    shared = parser.add_argument_group("sampling (every sampler)")
    shared.add_argument("--sampler", choices=tuple(SAMPLERS), default="mh",
                        help="mh: block-wise Metropolis-Hastings (Algorithm 1); smc: Power-SMC, each chain is one "
                             "independent SMC run reporting one draw from its weighted particles; rollout: the "
                             "rollout sampler (top-K candidates, M rollouts each; biased, see docs/smc.md)")
    common = shared_fields()
    add_config_flags(shared, PowerSamplerConfig, common, FLAGS, CLI_NAMES)
    shared.add_argument("--chains", type=argparse_integer("--chains"), default=1,
                        help="independent chains per prompt (batched)")
    shared.add_argument("--seed", type=argparse_integer("--seed", 0), default=0,
                        help="random seed; a run is deterministic given it")
    groups = {"shared": shared}
    for sampler, config_class in SAMPLERS.items():
        group = groups[sampler] = parser.add_argument_group(GROUPS[sampler])
        own = [field.name for field in dataclasses.fields(config_class) if field.name not in common]
        add_config_flags(group, config_class, own, FLAGS, CLI_NAMES)
        for old, field in OLD_FLAGS.get(sampler, {}).items():  # after the new flag, whose default stands
            dest = CLI_NAMES.get(field, field)
            group.add_argument(old, dest=dest, choices=FLAGS[field].choices, action=old_flag(flag_of(dest)),
                               help=argparse.SUPPRESS)
    return groups


def sampler_config(args: argparse.Namespace):
    """The config of `args.sampler` (`PowerSamplerConfig`, `SMCConfig` or `RolloutConfig`), every field
    from its flag."""
    return config_from_args(SAMPLERS[args.sampler], args, CLI_NAMES)


__all__ = [
    "CLI_NAMES", "FLAGS", "Flag", "GROUPS", "OLD_FLAGS", "SAMPLERS", "add_config_flags", "add_sampler_arguments",
    "config_from_args", "flag_of", "sampler_config", "shared_fields",
]
