"""Sequential Monte Carlo for p^alpha (METHOD §7), beside the MH sampler.

* `resampling`: multinomial, stratified, systematic and residual resampling (unbiased schemes).
* `power_smc`:  Power-SMC (Azizi et al.): particles grown token by token from a tempered proposal,
  weighted by p^alpha / q, ESS-triggered resampling, optional exponent ramp and MH rejuvenation;
  returns weighted particles and an unbiased estimate of Z = sum_{x in S_n} p(x)^alpha.
* `particles`:  Power-SMC's particle bookkeeping (row gathering, LM decoder states, MH moves).
* `outputs`:    one sequence per chain with its diagnostics, shared by the command `mcmc-llm sample
  --sampler smc` and the evaluation method `smc`.

The rollout sampler (after Ji et al.: no Markov chain, no particles) is `mcmc_llm.rollout`.
"""

from mcmc_llm.smc.power_smc import SMCConfig, SMCResult, power_smc
from mcmc_llm.smc.resampling import (
    RESAMPLING_SCHEMES, effective_sample_size, get_resampler, multinomial, offspring_counts, residual, stratified,
    systematic,
)

__all__ = [
    "RESAMPLING_SCHEMES", "SMCConfig", "SMCResult", "effective_sample_size", "get_resampler", "multinomial",
    "offspring_counts", "power_smc", "residual", "stratified", "systematic",
]
