"""One sequence per chain from the SMC and rollout samplers, with per-chain diagnostics.

Shared by the command `mcmc-llm sample --sampler smc|rollout` and the evaluation methods `smc` /
`rollout` (`mcmc_llm.evaluation.methods.smc`), so both report the same draws and diagnostics.

* `smc_chains`: each chain is one independent Power-SMC run; its sequence is one
  sampling-importance-resampling draw from the run's final weighted particles (generator
  `seed + 1`), its diagnostics the run's log Z_hat, final ESS, number of resampling events and
  number of distinct final particles.
* `rollout_chains`: each chain is one independent draw of the rollout sampler; diagnostics are
  the smallest tempered mass covered by the top-K candidates and the number of jackknife-clipped steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mcmc_llm.core.random import make_generator
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.smc.power_smc import SMCConfig, SMCResult, power_smc
from mcmc_llm.smc.rollout import RolloutConfig, RolloutResult, rollout_sample


def smc_diagnostics(result: SMCResult) -> list[dict[str, Any]]:
    """Per run (row of `result.log_normalizer`): log Z_hat, final ESS, resampling events, distinct particles."""
    return [
        {
            "log_normalizer": float(result.log_normalizer[run]),
            "final_ess": float(result.diagnostics["final_ess"][run]),
            "resampling_events": int(result.diagnostics["resampled"][run].sum()),
            "distinct_particles": int(result.diagnostics["distinct_final"][run]),
        }
        for run in range(result.num_prompts)
    ]


def smc_chains(
    lm: LanguageModel, prompts: Sequence[Sequence[int]], config: SMCConfig, chains_per_prompt: int, seed: int
) -> tuple[SequenceBatch, list[dict[str, Any]], SMCResult]:
    """`chains_per_prompt` independent Power-SMC runs per prompt (all batched; run seed `seed`), one
    SIR draw from each run's particles (generator `seed + 1`).  Rows of the returned batch and
    diagnostics: prompt b's chains are b*C .. b*C + C - 1."""
    runs = [list(prompt) for prompt in prompts for _ in range(chains_per_prompt)]
    result = power_smc(lm, runs, config, seed=seed)
    final = result.draw(make_generator(seed + 1))
    return final, smc_diagnostics(result), result


def rollout_diagnostics(result: RolloutResult) -> list[dict[str, Any]]:
    """Per row: the smallest tempered mass the top-K candidates covered, and the jackknife-clipped steps."""
    covered = result.diagnostics["tempered_mass_covered"]
    clipped = result.diagnostics["jackknife_clipped"]
    extras = []
    with np.errstate(all="ignore"):
        for row in range(len(result.final.lengths)):
            extras.append({
                "min_tempered_mass_covered": float(np.nanmin(covered[row])),
                "jackknife_clipped_steps": int(np.nansum(clipped[row])),
            })
    return extras


def rollout_chains(
    lm: LanguageModel, prompts: Sequence[Sequence[int]], config: RolloutConfig, chains_per_prompt: int, seed: int
) -> tuple[SequenceBatch, list[dict[str, Any]], RolloutResult]:
    """`chains_per_prompt` independent rollout-sampler draws per prompt (rows as in `smc_chains`)."""
    result = rollout_sample(lm, [list(p) for p in prompts], config, samples_per_prompt=chains_per_prompt, seed=seed)
    return result.final, rollout_diagnostics(result), result


__all__ = ["rollout_chains", "rollout_diagnostics", "smc_chains", "smc_diagnostics"]
