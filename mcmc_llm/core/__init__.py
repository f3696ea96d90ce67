"""Generic MCMC machinery: protocols, the MH kernel, composition, the driver and traces."""

from mcmc_llm.core.compose import Cycle, Mixture
from mcmc_llm.core.driver import run_chains
from mcmc_llm.core.mh import MetropolisHastings, MHInfo, MHState
from mcmc_llm.core.protocols import Kernel, Move, Proposal, Target
from mcmc_llm.core.random import make_generator
from mcmc_llm.core.trace import Trace

__all__ = [
    "Cycle", "Kernel", "MHInfo", "MHState", "MetropolisHastings", "Mixture", "Move", "Proposal",
    "Target", "Trace", "make_generator", "run_chains",
]
