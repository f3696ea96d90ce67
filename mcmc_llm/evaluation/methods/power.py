"""The `power` method: Algorithm 1 (block-wise MH, `power_sample`) targeting p(x)^alpha, with any
cut rule and any `PowerSamplerConfig` field (the method's config keys are that dataclass's fields)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.evaluation.methods.base import ConfiguredMethod, MethodSample, plain


@dataclasses.dataclass(frozen=True)
class PowerSampling(ConfiguredMethod):
    """Block-wise MH targeting p(x)^alpha (`power_sample`); one chain per sample, all chains of a
    call batched.  Config keys: the fields of `PowerSamplerConfig` (renamed by `renamed`).
    Diagnostics per chain: acceptance rate, MH steps, tokens resampled, and the acceptance rate of
    every stage.  `settings()` holds every key, so a new field of `PowerSamplerConfig` changes the
    fingerprint of every power method unless it is left out at its old behaviour (as `batching`)."""

    kind: ClassVar[str] = "power"
    config_class: ClassVar[type] = PowerSamplerConfig
    recorded_as: ClassVar[dict[str, str]] = {"cut_rule": "kernel"}  # the recorded (fingerprint) key stays `kernel`
    deprecated: ClassVar[dict[str, str]] = {"kernel": "cut_rule"}
    config: PowerSamplerConfig = PowerSamplerConfig()

    def settings(self) -> dict[str, Any]:
        settings = plain(self.key_values())
        del settings["early_reject"]  # the same chains either way (exact early rejection): not part of the fingerprint
        if settings["batching"] == "lockstep":  # records written before `batching` existed ran lock-step:
            del settings["batching"], settings["prefetch"]  # leaving them out keeps their fingerprints, so they still resume
        return {"kind": self.kind, **settings}

    def rows_per_sample(self) -> int:
        return 2  # a chain's current sequence and its proposal in flight

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        result = power_sample(lm, [list(p) for p in prompts], self.config, chains_per_prompt=samples_per_prompt, seed=seed)
        sequences = result.sequences()
        log_p = result.final.total_log_p().tolist()
        entropy = result.final.total(result.final.entropy).tolist()
        ended = result.final.ended.tolist()
        trace = result.trace
        samples = []
        for row, tokens in enumerate(sequences):
            diagnostics: dict[str, Any] = {"steps": 0, "acceptance_rate": None, "tokens_resampled": 0, "acceptance_by_stage": []}
            if trace is not None:
                accepted = trace.stats["accepted"][row].astype(float)
                stopped = trace.stats.get("rejected_early", np.zeros_like(trace.stats["accepted"]))  # the published chain has none
                stages = trace.stats["stage"][row]
                diagnostics = {
                    "steps": int(accepted.shape[0]),
                    "acceptance_rate": float(accepted.mean()) if accepted.size else None,
                    "tokens_resampled": int(trace.stats["tokens_resampled"][row].sum()),
                    "tokens_rejected_early": int((trace.stats["tokens_resampled"][row] * stopped[row]).sum()),
                    "steps_rejected_early": int(stopped[row].sum()),
                    "acceptance_by_stage": [float(accepted[stages == s].mean()) for s in sorted(set(stages.tolist()))],
                    # every MH step in order: its stage, cut position relative to the current length, outcome
                    "step_stage": stages.astype(int).tolist(),
                    "step_relative_cut": [round(float(c), 4) for c in trace.stats["relative_cut"][row]],
                    "step_accepted": accepted.astype(int).tolist(),
                    # the chain's state after every step: log p of its sequence and its length (ESS, R-hat)
                    "step_log_p": [round(float(v), 6) for v in trace.samples["log_p"][row]],
                    "step_length": [int(v) for v in trace.samples["length"][row]],
                }
            samples.append(MethodSample(tokens, float(log_p[row]), len(tokens), bool(ended[row]), diagnostics, entropy=float(entropy[row])))
        return [samples[i * samples_per_prompt : (i + 1) * samples_per_prompt] for i in range(len(prompts))]
