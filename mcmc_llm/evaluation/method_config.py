"""The `[[methods]]` tables of an experiment config: one `MethodConfig` per table.

    [[methods]] name, kind, samples, max_new_tokens, eos_token_ids, + the keys of the kind (see METHOD_KEYS)

The keys of `power`, `smc` and `rollout` are the fields of their sampler's config dataclass
(`PowerSamplerConfig`, `SMCConfig`, `RolloutConfig`; `ConfiguredMethod.keys`), checked here
where a check names the allowed values and otherwise by the dataclass.  `best_of_n` and
`majority_vote` take `n`, or `budget_tokens`, or `match` (a power method's name), and N is then
matched to that budget (`mcmc_llm.evaluation.methods.budget`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple

from mcmc_llm.drivers.power_config import BATCHING, RATIOS
from mcmc_llm.evaluation import checks
from mcmc_llm.evaluation.methods import (
    METHOD_KINDS, SAMPLERS, SELECTIONS, Method, PowerSampling, matched_n, power_token_budget,
)
from mcmc_llm.proposals.cut_rules import CUT_RULES
from mcmc_llm.smc.power_smc import REJUVENATION_POINTS
from mcmc_llm.smc.resampling import RESAMPLING_SCHEMES

_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """A named method; `samples` is its number of samples per problem; `eos_token_ids`, when set,
    the EOS set this method's generation, MH and decoding use instead of the model's."""

    name: str
    method: Method
    samples: int
    eos_token_ids: tuple[int, ...] | None = None

    @property
    def kind(self) -> str:
        return self.method.kind


_RULE_KEYS = {"top_k": checks.integer(1), "top_p": checks.top_p}
_CANDIDATE_KEYS = {
    "n": checks.integer(1), "budget_tokens": checks.number(0.0, strict=True), "match": checks.string,
    "expected_length": checks.number(0.0, strict=True), "sampler": checks.choice(SAMPLERS), "alpha": checks.alpha,
    "temperature": checks.number(0.0, strict=True), **_RULE_KEYS,
}
#: Checks of the keys of the kinds that hold a sampler config (`ConfiguredMethod`); the keys
#: themselves are that config's fields, and a field without a check here is validated by the
#: config class itself (its error names the method).
_CONFIG_CHECKS: dict[str, dict[str, checks.Check]] = {
    "power": {
        "alpha": checks.alpha, "block_size": checks.integer(1), "mcmc_steps": checks.integer(0),
        "kernel": checks.choice(CUT_RULES), "cut_rule": checks.choice(CUT_RULES), "proposal_temperature": checks.number(0.0, strict=True),
        "cut_sharpness": checks.number(0.0), "ratio": checks.choice(RATIOS),
        "batching": checks.choice(BATCHING), "prefetch": checks.boolean, "early_reject": checks.boolean, **_RULE_KEYS,
    },
    "smc": {
        "alpha": checks.finite_alpha, "particles": checks.integer(1), "resampling": checks.choice(tuple(RESAMPLING_SCHEMES)),
        "ess_threshold": checks.fraction, "proposal_temperature": checks.number(0.0, strict=True),
        "ramp_tokens": checks.integer(0), "rejuvenation_steps": checks.integer(0),
        "rejuvenation_kernel": checks.choice(CUT_RULES), "rejuvenation_cut_rule": checks.choice(CUT_RULES), "rejuvenate": checks.choice(REJUVENATION_POINTS),
    },
    "rollout": {
        "alpha": checks.finite_alpha, "top_candidates": checks.integer(1), "rollouts": checks.integer(1),
        "jackknife": checks.boolean, "proposal_temperature": checks.number(0.0, strict=True), "horizon": checks.integer(1),
    },
}


def _unchecked(value: Any) -> None:
    return None


def _config_keys(kind: str) -> dict[str, checks.Check]:
    return {key: _CONFIG_CHECKS[kind].get(key, _unchecked) for key in METHOD_KINDS[kind].accepted_keys()}


#: Keys each method kind accepts besides the common ones (name, kind, samples, max_new_tokens).
METHOD_KEYS: dict[str, dict[str, checks.Check]] = {
    "base": dict(_RULE_KEYS),
    "low_temperature": {"alpha": checks.alpha, "temperature": checks.number(0.0, strict=True), **_RULE_KEYS},
    "greedy": {},
    "power": _config_keys("power"),
    "best_of_n": {**_CANDIDATE_KEYS, "select": checks.choice(SELECTIONS)},
    "majority_vote": dict(_CANDIDATE_KEYS),
    "smc": _config_keys("smc"),
    "rollout": _config_keys("rollout"),
}
COMMON_METHOD_KEYS = ("name", "kind", "samples", "max_new_tokens")
#: Common keys listed after the kind's own keys (in "allowed: ..." messages).
OPTIONAL_COMMON_KEYS = ("eos_token_ids",)


def _method_settings(table: checks.Table, kind: str) -> dict[str, Any]:
    return {key: table.get(key, check) for key, check in METHOD_KEYS[kind].items() if table.has(key)}




def _resolve_budget(
    settings: dict[str, Any], path: str, cap: int, power: dict[str, PowerSampling], problems: list[str]
) -> dict[str, Any] | None:
    """Settings with `n` resolved from `match` / `budget_tokens` (see `matched_n`), or None."""
    settings = dict(settings)
    given = [key for key in ("n", "budget_tokens", "match") if key in settings]
    if not given and len(power) == 1:
        settings["match"], given = next(iter(power)), ["match"]
    if len(given) != 1:
        problems.append(
            f"{path}: give exactly one of n, budget_tokens, match (the name of a power method)"
            + (f"; got {', '.join(given)}" if given else f"; there are {len(power)} power methods to match")
        )
        return None
    match = settings.pop("match", None)
    if match is not None:
        if match not in power:
            problems.append(f"{path}.match: must name a power method, one of {', '.join(power) or '(none)'}; got {match!r}")
            return None
        length = settings.get("expected_length", power[match].max_new_tokens)
        settings.update(
            budget_tokens=round(power_token_budget(power[match].config, length), 3), expected_length=length, matched_to=match
        )
    elif "budget_tokens" in settings:
        settings.setdefault("expected_length", cap)
    if "n" not in settings:
        settings["n"] = matched_n(settings["budget_tokens"], settings["expected_length"])
    return settings


class _Parsed(NamedTuple):
    """One `[[methods]]` table as read, before the methods are built (best-of-N and majority vote
    last: their budget may refer to a power method)."""

    path: str
    name: str | None
    kind: str | None
    samples: int | None
    cap: int | None
    settings: dict[str, Any]
    valid: bool


def parse_methods(raw: Any, samples_per_problem: int, max_new_tokens: int, problems: list[str]) -> tuple[MethodConfig, ...]:
    """The `[[methods]]` tables `raw`; every problem is appended to `problems` (a method with a
    problem is left out).  `samples` and `max_new_tokens` default to the `[sampling]` values given."""
    if not isinstance(raw, list) or not raw or not all(isinstance(item, dict) for item in raw):
        problems.append("methods: must be a non-empty array of tables ([[methods]] ...)")
        return ()
    parsed = []
    eos_sets: dict[str, tuple[int, ...] | None] = {}
    for index, item in enumerate(raw):
        path = f"methods[{index}]"
        table = checks.Table(item, path, problems)
        before = len(problems)
        name = table.get("name", checks.string, required=True)
        if name is not None and not _NAME.fullmatch(name):
            problems.append(f"{path}.name: may only hold letters, digits and _.+-, got {name!r}")
        kind = table.get("kind", checks.choice(tuple(METHOD_KINDS)), required=True)
        samples = table.get("samples", checks.integer(1), samples_per_problem)
        cap = table.get("max_new_tokens", checks.integer(1), max_new_tokens)
        eos = table.get("eos_token_ids", checks.token_ids)
        settings = _method_settings(table, kind) if kind else {}
        if kind:
            table.done(list(COMMON_METHOD_KEYS) + list(METHOD_KEYS[kind]) + list(OPTIONAL_COMMON_KEYS))
        parsed.append(_Parsed(path, name, kind, samples, cap, settings, len(problems) == before))
        eos_sets[name] = None if eos is None else tuple(eos)
    names = [p.name for p in parsed if p.name]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"methods: the name {name!r} is used more than once; names must be unique")
    built: dict[str, Method] = {}
    broken = {p.name for p in parsed if p.name and not p.valid}  # already reported: do not cascade
    for path, name, kind, samples, cap, settings, valid in sorted(parsed, key=lambda p: p.kind in ("best_of_n", "majority_vote")):
        if not valid:
            continue
        if kind in ("best_of_n", "majority_vote"):
            implicit = not any(key in settings for key in ("n", "budget_tokens", "match"))
            if settings.get("match") in broken or (implicit and any(p.kind == "power" and p.name in broken for p in parsed)):
                continue
            power = {n: m for n, m in built.items() if isinstance(m, PowerSampling)}
            settings = _resolve_budget(settings, path, cap, power, problems)
            if settings is None:
                continue
        try:
            built[name] = METHOD_KINDS[kind].from_keys(cap, **settings)
        except (TypeError, ValueError) as error:
            broken.add(name)
            problems.append(f"{path}: {error}")
    return tuple(MethodConfig(p.name, built[p.name], p.samples, eos_sets.get(p.name)) for p in parsed if p.name in built)
