"""Everything a kernel author needs, from one module: `from mcmc_llm.authoring import ...`.

A thin façade: every name is defined elsewhere and re-exported here unchanged.  The how-to is
docs/howto_custom_kernels.md.

* a cut rule: `CutRuleBase` (write `log_probs`), `positions_allowed`, `normalised`, the built-in
  rules (`UniformCut`, `WithinBlockCut`, `RestartCut`, `PriorityCut`, `EntropyCut`);
* a proposal: `TwoPhaseSuffixProposal` (give a cut rule and `sampler_for(cut)`), `Sampler`,
  `SamplingRule`, `SuffixResampling`, `MixtureProposal`; for a proposal written from scratch
  `CutPlan`, `Move`, `propose_suffix`, `suffix_log_q`, `under_law`, and the random draws
  `categorical`, `uniform`, `split`;
* a target: `PowerTarget` (and `SequenceBatch`, what every piece reads);
* running it: `power_sample`, `PowerSamplerConfig`, `Stage` (what a proposal factory receives),
  `MetropolisHastings`, `run_chains`, `Mixture`, `Cycle`, `TokenBatch`, the toy LMs (`load_toy`,
  `NgramLM`);
* checking it: `check_kernel` and its `KernelCheckResult`, `power_law`, `sample_exact`.
"""

from mcmc_llm.core.protocols import Move, Sampler
from mcmc_llm.core.random import categorical, split, uniform
from mcmc_llm.drivers.chains import run_chains
from mcmc_llm.drivers.power import power_sample
from mcmc_llm.drivers.power_config import PowerSamplerConfig, Stage
from mcmc_llm.kernels.compose import Cycle, Mixture
from mcmc_llm.kernels.mh import MetropolisHastings
from mcmc_llm.lm.exact import power_law, sample_exact
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.lm.toy import NgramLM, load_toy
from mcmc_llm.proposals.cut_rules import (
    CutRuleBase, EntropyCut, PriorityCut, RestartCut, UniformCut, WithinBlockCut, normalised, positions_allowed,
)
from mcmc_llm.proposals.mixture import MixtureProposal
from mcmc_llm.proposals.suffix import SuffixResampling
from mcmc_llm.proposals.suffix_moves import CutPlan, propose_suffix, suffix_log_q, under_law
from mcmc_llm.proposals.two_phase import TwoPhaseSuffixProposal
from mcmc_llm.targets.sequence import PowerTarget
from mcmc_llm.testing.kernel_check import KernelCheckResult, check_kernel

__all__ = [
    "CutPlan", "CutRuleBase", "Cycle", "EntropyCut", "KernelCheckResult", "MetropolisHastings", "Mixture", "MixtureProposal",
    "Move", "NgramLM", "PowerSamplerConfig", "PowerTarget", "PriorityCut", "RestartCut", "Sampler", "SamplingRule", "SequenceBatch",
    "Stage", "SuffixResampling", "TokenBatch", "TwoPhaseSuffixProposal", "UniformCut", "WithinBlockCut", "categorical",
    "check_kernel", "load_toy", "normalised", "positions_allowed", "power_law", "power_sample", "propose_suffix",
    "run_chains", "sample_exact", "split", "suffix_log_q", "under_law", "uniform",
]
