"""Sampling methods compared by the evaluation runner, all through the one generation path.

Every method draws tokens with `sample_continuations` (directly, or inside `power_sample`), or,
for `smc` and `rollout`, in their own token loops that count into the same counters, so every
method's compute shows in the LM's `ComputeCounter` the same way.  Common interface (`base`):

    method.generate(lm, prompts, samples_per_prompt, seed, *, answer_of=None)
        -> list (per prompt) of list (per sample) of MethodSample

* `base`             x ~ p                                   (tau = 1, full support)       `ancestral`
* `low_temperature`  x_t ~ p(x_t | x_<t)^(1/tau), tau = 1/alpha by default                 `ancestral`
* `greedy`           x_t = argmax p(x_t | x_<t)              (SamplingRule(0.0))           `ancestral`
* `power`            Algorithm 1 (block-wise MH) targeting p(x)^alpha; any kernel, any     `power`
                     `PowerSamplerConfig` field
* `best_of_n`        N samples from `base` or `low_temperature`; keep the one of highest   `candidates`
                     log p(x) (or of highest mean per-token log p, `select = "mean_log_p"`)
* `majority_vote`    N samples; keep one whose answer (`answer_of(tokens)`) is the most    `candidates`
                     common
* `smc`              Power-SMC targeting p(x)^alpha (`power_smc`): each sample is one      `smc`
                     independent run with `particles` particles and one draw from its
                     final weighted particles
* `rollout`          the rollout sampler (`rollout_sample`): top-K candidates, zeta        `smc`
                     estimated by rollouts; each sample is one independent draw (biased,
                     see docs/smc.md)

`power`, `smc` and `rollout` hold their sampler's config dataclass (`ConfiguredMethod`), whose
fields are their config keys.  Budget matching of best-of-N and majority vote against a power
chain (METHOD §4): `budget` (`power_token_budget`, `matched_n`).
"""

from mcmc_llm.evaluation.methods.ancestral import BaseSampling, GreedyDecoding, LowTemperatureSampling
from mcmc_llm.evaluation.methods.base import AnswerFn, ConfiguredMethod, Draw, Method, MethodSample, draw
from mcmc_llm.evaluation.methods.budget import matched_n, power_token_budget
from mcmc_llm.evaluation.methods.candidates import SAMPLERS, SELECTIONS, BestOfN, MajorityVote
from mcmc_llm.evaluation.methods.power import PowerSampling
from mcmc_llm.evaluation.methods.smc import RolloutSampling, SMCSampling

METHOD_KINDS: dict[str, type[Method]] = {
    cls.kind: cls for cls in (BaseSampling, LowTemperatureSampling, GreedyDecoding, PowerSampling, BestOfN, MajorityVote,
                        SMCSampling, RolloutSampling)
}

__all__ = [
    "METHOD_KINDS", "SAMPLERS", "SELECTIONS", "AnswerFn", "BaseSampling", "BestOfN", "ConfiguredMethod", "Draw",
    "GreedyDecoding", "LowTemperatureSampling", "MajorityVote", "Method", "MethodSample", "PowerSampling",
    "RolloutSampling", "SMCSampling", "draw", "matched_n", "power_token_budget",
]
