"""The rollout sampler (after Ji et al., METHOD §7): look-ahead sampling of p^alpha, no Markov chain
and no particles.

The next token is drawn from p(v | h)^alpha * zeta_hat(h v) over the top-K candidates, zeta (the
tempered mass of the completions of h v) estimated by importance-weighted rollouts through the one
generation path.  Biased at finite M and K < V (see docs/smc.md, where it is compared with Power-SMC).

* `sampler`: `RolloutConfig`, `rollout_next_token_probs`, `rollout_sample` -> `RolloutResult`.
* `outputs`: one sequence per chain with its diagnostics (`rollout_chains`), shared by the command
  `mcmc-llm sample --sampler rollout` and the evaluation method `rollout`.

It builds on `mcmc_llm.lm` only (generation, sampling rules, sequences); `mcmc_llm.smc` does not
import it.
"""

from mcmc_llm.rollout.sampler import RolloutConfig, RolloutResult, rollout_next_token_probs, rollout_sample

__all__ = ["RolloutConfig", "RolloutResult", "rollout_next_token_probs", "rollout_sample"]
