"""One sequence per chain from Power-SMC, with per-chain diagnostics.

Shared by the command `mcmc-llm sample --sampler smc` and the evaluation method `smc`
(`mcmc_llm.evaluation.methods.smc`), so both report the same draws and diagnostics (the rollout
sampler's counterpart: `mcmc_llm.rollout.outputs`).

* `smc_chains`: each chain is one independent Power-SMC run; its sequence is one
  sampling-importance-resampling draw from the run's final weighted particles (generator
  `seed + 1`), its diagnostics the run's log Z_hat, final ESS, number of resampling events and
  number of distinct final particles.
"""

from __future__ import annotations

from typing import Any, Sequence

from mcmc_llm.core.random import make_generator
from mcmc_llm.lm.protocol import LanguageModel
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.smc.power_smc import SMCConfig, SMCResult, power_smc


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


__all__ = ["smc_chains", "smc_diagnostics"]
