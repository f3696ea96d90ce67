"""Exact laws of a small-vocabulary language model, by enumerating its length-capped support S_n.

* `support`: S_n, the token convention, `enumerate_support(lm, n, prompt)` -> `ExactLaw` (the base
  law p(x) with per-token log-probs), `support_size_bound`.
* `laws`: `base_law`, `power_law`, `nested_law`, `tempered_law` (each an `ExactLaw`) and
  `sample_exact` (independent exact draws from any of them).

Every name of both modules is importable from here (`from mcmc_llm.lm.exact import power_law, ExactLaw`).
"""

from mcmc_llm.lm.exact.laws import base_law, nested_law, power_law, sample_exact, tempered_law
from mcmc_llm.lm.exact.support import DEFAULT_MAX_SUPPORT, ExactLaw, enumerate_support, support_size_bound

__all__ = [
    "DEFAULT_MAX_SUPPORT", "ExactLaw", "base_law", "enumerate_support", "nested_law", "power_law", "sample_exact",
    "support_size_bound", "tempered_law",
]
