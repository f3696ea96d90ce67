"""The `smc` and `rollout` methods: the samplers of `mcmc_llm.smc`, one independent run per sample.

* `smc`      Power-SMC targeting p(x)^alpha (`power_smc`): each sample is one independent run with
             `particles` particles and one draw from its final weighted particles
* `rollout`  the rollout sampler (`rollout_sample`): top-K candidates, zeta estimated by rollouts;
             each sample is one independent draw (biased, see docs/smc.md)

Both hold their sampler's config (`SMCConfig`, `RolloutConfig`) and take their config keys from
its fields (`ConfiguredMethod`); `smc` names the field `num_particles` `particles`.  Both count
their tokens into the LM's `ComputeCounter` like every other method.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from mcmc_llm.evaluation.methods.base import ConfiguredMethod, MethodSample
from mcmc_llm.rollout.outputs import rollout_chains
from mcmc_llm.rollout.sampler import RolloutConfig
from mcmc_llm.smc.outputs import smc_chains
from mcmc_llm.smc.power_smc import SMCConfig


def _chain_samples(final, extras, prompts, samples_per_prompt) -> list[list[MethodSample]]:
    """MethodSamples from one sequence per chain (rows prompt-major) and per-chain diagnostics."""
    log_p = final.total_log_p().tolist()
    entropy = final.total(final.entropy).tolist()
    ended = final.ended.tolist()
    samples = [
        MethodSample(tokens, float(log_p[row]), len(tokens), bool(ended[row]), dict(extras[row]), entropy=float(entropy[row]))
        for row, tokens in enumerate(final.to_lists())
    ]
    return [samples[i * samples_per_prompt : (i + 1) * samples_per_prompt] for i in range(len(prompts))]


@dataclasses.dataclass(frozen=True)
class SMCSampling(ConfiguredMethod):
    """Power-SMC targeting p(x)^alpha (`mcmc_llm.smc.power_smc`); one independent run of `particles`
    particles per sample, all runs of a call batched; the sample is one draw from the run's final
    weighted particles (as `mcmc-llm sample --sampler smc`).  Config keys: the fields of
    `SMCConfig` (`particles` = `num_particles`).  Diagnostics per sample: `log_normalizer`
    (log Z_hat), `final_ess`, `resampling_events`, `distinct_particles`."""

    kind: ClassVar[str] = "smc"
    per_prompt_seeds: ClassVar[bool] = False  # the runs of a call share one generator
    config_class: ClassVar[type] = SMCConfig
    renamed: ClassVar[dict[str, str]] = {"num_particles": "particles"}
    recorded_as: ClassVar[dict[str, str]] = {"rejuvenation_cut_rule": "rejuvenation_kernel"}  # the key in settings and fingerprints
    deprecated: ClassVar[dict[str, str]] = {"rejuvenation_kernel": "rejuvenation_cut_rule"}
    recorded: ClassVar[tuple[str, ...]] = (
        "max_new_tokens", "alpha", "particles", "resampling", "ess_threshold", "proposal_temperature", "ramp_tokens",
        "rejuvenation_steps", "rejuvenation_kernel",
    )
    config: SMCConfig = SMCConfig(max_new_tokens=512)

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        final, extras, _ = smc_chains(lm, prompts, self.config, samples_per_prompt, seed)
        return _chain_samples(final, extras, prompts, samples_per_prompt)


@dataclasses.dataclass(frozen=True)
class RolloutSampling(ConfiguredMethod):
    """The rollout sampler (`mcmc_llm.rollout`): next token from p^alpha(v) zeta_hat(v) over the
    `top_candidates` most likely tokens, zeta estimated with `rollouts` rollouts each (jackknifed
    unless `jackknife = false`); one independent draw per sample, all batched (as `mcmc-llm sample
    --sampler rollout`).  Config keys: the fields of `RolloutConfig`.  Diagnostics per sample:
    `min_tempered_mass_covered`, `jackknife_clipped_steps`."""

    kind: ClassVar[str] = "rollout"
    per_prompt_seeds: ClassVar[bool] = False  # the draws of a call share one generator
    config_class: ClassVar[type] = RolloutConfig
    recorded: ClassVar[tuple[str, ...]] = (
        "max_new_tokens", "alpha", "top_candidates", "rollouts", "jackknife", "proposal_temperature", "horizon",
    )
    config: RolloutConfig = RolloutConfig(max_new_tokens=512)

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        final, extras, _ = rollout_chains(lm, prompts, self.config, samples_per_prompt, seed)
        return _chain_samples(final, extras, prompts, samples_per_prompt)
