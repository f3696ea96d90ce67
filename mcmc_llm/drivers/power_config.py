"""The settings of the block-wise power sampler (Algorithm 1 of Karan & Du): `PowerSamplerConfig`,
its stages, and the checks that a config is consistent.

* `PowerSamplerConfig`: alpha, block size B, length cap T_max, N_MCMC, cut rule, proposal sampling
  rule, ratio, batching, pre-fetching, early rejection; validated when built.
* `Stage`: stage k of Algorithm 1 (0-based), its length cap n_k = min((k + 1) B, T_max) and first
  position k B (`PowerSamplerConfig.stages()`).
* `BATCHING`, `RATIOS`: the allowed `batching` and `ratio` values.
* `check_proposal_settings`: the settings that `power_sample(proposal=...)` would ignore.

`mcmc_llm.drivers.power` runs the sampler and re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

from mcmc_llm.core.deprecation import deprecated_name
from mcmc_llm.core.validate import integer, number
from mcmc_llm.drivers.published_chain import PUBLISHED_TOP_K
from mcmc_llm.lm.sampling import SamplingRule, TemperedProposal
from mcmc_llm.proposals.cut_rules import CutRule, resolve_cut_rule


BATCHING = ("continuous", "lockstep")
RATIOS = ("exact", "published", "reference")


class Stage(NamedTuple):
    """Stage k of Algorithm 1 (0-based `index`): its length cap n_k and first position (k * B)."""

    index: int
    cap: int
    block_start: int


@dataclasses.dataclass(frozen=True)
class PowerSamplerConfig(TemperedProposal):
    """Settings of Algorithm 1 (defaults: the paper's).

    cut_rule: a registry name ("uniform", "within-block", "restart", "priority", "entropy") or any
        `CutRule` object (`mcmc_llm.proposals.cut_rules`).  `kernel` is its old name, still accepted.
    proposal_temperature: None means 1/alpha (0.25 when alpha is inf).
    cut_sharpness: beta of the priority and entropy cut rules given by name.
    ratio: "exact"; "published" for the reference code's biased ratio inside our chain; or
        "reference" for a faithful copy of the reference code's whole chain (proposal length,
        top-k 50 unless `top_k` is set, ratio, early stop at EOS; `drivers.published_chain`,
        always lock-step).  The last two are for comparisons only.
    batching: "continuous" (chains step asynchronously and share one continuously refilled batch,
        `mcmc_llm.drivers.asynchronous`) or "lockstep" (all chains take each step together, as the
        algorithm is written).  Same kernels, same random streams: the same chains.
    prefetch: with continuous batching, rows no chain's current request needs pre-fetch each
        chain's next proposal for both outcomes of its MH step in flight
        (`mcmc_llm.drivers.asynchronous`); same law and same chains.  Lock-step chains do not use it.
    early_reject: stop a proposal as soon as its move is certain to be rejected, where that is
        exact (`mcmc_llm.kernels.suffix_mh`: the target `alpha log p`, proposal temperature in
        [1/alpha, 1], a cut rule with a reverse bound); same chains, fewer tokens.
    """

    alpha: float = 4.0
    block_size: int = 192
    max_new_tokens: int = 3072
    mcmc_steps: int = 10
    cut_rule: Any = "uniform"
    proposal_temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    cut_sharpness: float = 1.0
    ratio: str = "exact"
    batching: str = "continuous"
    prefetch: bool = True
    early_reject: bool = True
    kernel: dataclasses.InitVar[str | None] = None  # the old name of `cut_rule` (init-only: read `cut_rule`)

    def __post_init__(self, kernel):
        if kernel is not None:
            if self.cut_rule != "uniform" and self.cut_rule != kernel:
                raise ValueError(f"got cut_rule={self.cut_rule!r} and its old name kernel={kernel!r}; give one")
            deprecated_name("PowerSamplerConfig(kernel=...)", "cut_rule=", stacklevel=4)
            object.__setattr__(self, "cut_rule", kernel)
        number("alpha", self.alpha, 0, strict=True, allow_inf=True)  # inf: the max-swap rule
        for name, minimum in (("block_size", 1), ("max_new_tokens", 1), ("mcmc_steps", 0)):
            object.__setattr__(self, name, integer(name, getattr(self, name), minimum))
        if self.block_size > self.max_new_tokens:
            raise ValueError(
                f"block_size {self.block_size} is larger than max_new_tokens {self.max_new_tokens}; "
                "a block must fit within the length cap"
            )
        self.cut_rule_object()  # validates the name or the object
        if self.ratio not in RATIOS:
            raise ValueError(f"unknown ratio {self.ratio!r}; allowed: exact, published (the reference code's biased ratio), "
                             "reference (a copy of the reference code's whole chain)")
        if self.ratio == "reference" and math.isinf(self.alpha):
            raise ValueError("ratio='reference' copies the reference code's mcmc_power_samp, which needs a finite alpha")
        if self.batching not in BATCHING:
            raise ValueError(f"unknown batching {self.batching!r}; allowed: {', '.join(BATCHING)}")
        for name in ("prefetch", "early_reject"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self.sampling_rule()  # validates temperature / top-k / top-p

    def cut_rule_object(self) -> CutRule:
        """The cut rule as an object (`resolve_cut_rule`)."""
        return resolve_cut_rule(self.cut_rule, self.cut_sharpness)

    def sampling_rule(self) -> SamplingRule:
        """The proposal's rule (`TemperedProposal`); the reference chain's default top-k is the published 50."""
        rule = super().sampling_rule()
        return dataclasses.replace(rule, top_k=PUBLISHED_TOP_K) if self.ratio == "reference" and self.top_k is None else rule

    @property
    def num_stages(self) -> int:
        return math.ceil(self.max_new_tokens / self.block_size)

    def stage_cap(self, stage: int) -> int:
        """Length cap n_k of 0-based stage k."""
        return min((stage + 1) * self.block_size, self.max_new_tokens)

    def stages(self) -> list[Stage]:
        return [Stage(k, self.stage_cap(k), k * self.block_size) for k in range(self.num_stages)]


def check_proposal_settings(config: PowerSamplerConfig) -> None:
    """With `power_sample(proposal=...)` the factory's proposals make every MH move: the config's
    `cut_rule` (with `cut_sharpness`) and `ratio="published"` only build the default proposal, so a
    non-default value of either would be ignored, and is a ValueError.  The extension still uses the
    config's sampling rule (`proposal_temperature`, `top_k`, `top_p`) and `proposal_lm`."""
    if config.cut_rule_object() != resolve_cut_rule("uniform"):
        raise ValueError(f"cut_rule={config.cut_rule!r} has no effect with proposal=: the proposal draws its own cuts; "
                         "give the cut rule to the proposal and leave cut_rule at 'uniform'")
    if config.ratio == "published":
        raise ValueError("ratio='published' has no effect with proposal=: the proposal computes its own log q terms")


__all__ = ["BATCHING", "RATIOS", "PowerSamplerConfig", "Stage", "check_proposal_settings"]
