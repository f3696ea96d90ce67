"""Independence proposal: `x' ~ g` regardless of `x`.

`log q(x'|x) = log g(x')` and `log q(x|x') = log g(x)`; MH then accepts with
`min(1, w(x') / w(x))` where `w = pi / g`.  `g` is any object with `sample(source, n)` and
`log_prob(x)` (e.g. a `GaussianMixture` or a `Categorical`).
"""

from __future__ import annotations

from mcmc_llm.core.protocols import Move
from mcmc_llm.core.tree import num_chains


class Independence:
    def __init__(self, distribution):
        for method in ("sample", "log_prob"):
            if not callable(getattr(distribution, method, None)):
                raise TypeError(f"the independence proposal needs a distribution with {method}(); "
                                f"{type(distribution).__name__} has none")
        self.distribution = distribution

    def propose(self, source, position) -> Move:
        proposed = self.distribution.sample(source, num_chains(position))
        return Move(proposed, self.distribution.log_prob(proposed), self.distribution.log_prob(position))
