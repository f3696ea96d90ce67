"""mcmc_llm: Markov chain Monte Carlo over language-model outputs.

Where things live (each folder holds one kind of piece):

* `targets/`     unnormalised log-densities: toy continuous and discrete targets, sequence targets
                 (power, product of LMs, reward-tilted);
* `proposals/`   moves with both log q terms: random walk, independence, suffix resampling and its
                 cut rules;
* `kernels/`     Markov kernels: Metropolis–Hastings, cycles and mixtures;
* `drivers/`     what runs chains: `run_chains` for any kernel, `power_sample` (Algorithm 1, lock-step
                 or asynchronous with pre-fetching);
* `lm/`          the language-model protocol, toy models, the one generation path, token sequences
                 as positions; the transformers backend (`lm/hf/`), exact laws by enumeration (`lm/exact/`);
* `smc/`         Power-SMC;
* `rollout/`     the rollout sampler (look-ahead, no Markov chain);
* `diagnostics/`, `tasks/`, `evaluation/`, `commands/` (the CLI).

Writing your own cut rule, proposal or target: every name it needs is in `mcmc_llm.authoring`
(a re-exporting façade; `check_kernel` checks a kernel against exact laws).

The most used names are importable from here: `from mcmc_llm import power_sample, PowerSamplerConfig`.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Cycle": "kernels.compose", "Mixture": "kernels.compose", "MetropolisHastings": "kernels.mh",
    "run_chains": "drivers.chains", "power_sample": "drivers.power", "PowerSamplerConfig": "drivers.power_config",
    "make_generator": "core.random", "Streams": "core.random", "Trace": "core.trace", "Kernel": "core.protocols",
    "Move": "core.protocols", "Proposal": "core.protocols", "SuffixProposal": "core.protocols", "Target": "core.protocols",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mcmc_llm.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mcmc_llm' has no attribute {name!r}")
