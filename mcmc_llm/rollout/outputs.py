"""One sequence per chain from the rollout sampler, with per-chain diagnostics.

Shared by the command `mcmc-llm sample --sampler rollout` and the evaluation method `rollout`
(`mcmc_llm.evaluation.methods.smc`), so both report the same draws and diagnostics (Power-SMC's
counterpart: `mcmc_llm.smc.outputs`).

* `rollout_chains`: each chain is one independent draw of the rollout sampler; diagnostics are
  the smallest tempered mass covered by the top-K candidates and the number of jackknife-clipped steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.rollout.sampler import RolloutConfig, RolloutResult, rollout_sample


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
    """`chains_per_prompt` independent rollout-sampler draws per prompt (all batched, seed `seed`).
    Rows of the returned batch and diagnostics: prompt b's chains are b*C .. b*C + C - 1."""
    result = rollout_sample(lm, [list(p) for p in prompts], config, samples_per_prompt=chains_per_prompt, seed=seed)
    return result.final, rollout_diagnostics(result), result


__all__ = ["rollout_chains", "rollout_diagnostics"]
