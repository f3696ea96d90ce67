"""`check_kernel`: is a power-sampling kernel exact?  Its laws against exact enumeration, with stated power.

The target is pi(x) ∝ p(x)^alpha on S_n for a language model small enough to enumerate (a toy LM,
`mcmc_llm.lm.exact`), run as Algorithm 1 with blocks of B.  The kernel is what `power_sample`
takes: a proposal factory `Stage -> SuffixProposal`, or a cut rule (an object or a registry name)
given to `PowerSamplerConfig(cut_rule=...)`.  Checks, each with false-failure rate r:

1. **invariance** (`conservation_check`): `conservation_chains` chains start at exact draws of pi
   and take `conservation_steps` MH steps of the last stage's kernel (`MetropolisHastings` around
   the stage's proposal, outside any driver); their law must still be pi (chi-square).  This tests
   the MH ratio alone, whatever the mixing.
2. **sampling**, once per driver (`batching="lockstep"` and `"continuous"`, pre-fetching on):
   `power_sample` with `chains` independent chains x `steps` MH steps per stage; the final
   sequences against pi by a chi-square test and a total-variation test.  This tests invariance
   and mixing together, and the drivers.
3. **driver identity**: the drivers' final sequences must be equal (a kernel that draws from
   anything but its `source`, or whose `reads_lengths_only` lies, breaks it).

The kernel passes when every check passes; for an exact kernel that fails with probability at most
r x (1 + 2 x drivers) (a union bound).  Power: every statistical check reports `min_detectable_tv`,
the smallest TV distance from pi (over its pooled bins) it detects with probability >= 0.9 at its
sample size; a kernel whose law is closer to pi than that may pass.  Passing is evidence, not
proof: irreducibility, and defects smaller than the detectable TV, need reasoning too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from mcmc_llm.core.random import make_generator
from mcmc_llm.drivers.power import default_proposal, power_sample
from mcmc_llm.drivers.power_config import BATCHING, PowerSamplerConfig, Stage
from mcmc_llm.kernels.mh import MetropolisHastings
from mcmc_llm.lm.exact import power_law, sample_exact
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.lm.exact.support import ExactLaw
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.proposals.cut_rules import CutRule
from mcmc_llm.targets.sequence import PowerTarget
from mcmc_llm.testing.chains import ConservationResult, conservation_check
from mcmc_llm.testing.discrete import (
    DEFAULT_FALSE_FAILURE_RATE, DEFAULT_POWER, ChiSquareResult, TotalVariationResult, _count, _check_rate,
    chi_square_check, counts_from_samples, total_variation_check,
)

ProposalFactory = Callable[[Stage], Any]


@dataclasses.dataclass(frozen=True)
class SamplingCheck:
    """Algorithm 1 in one driver: the final sequences' law against pi (chi-square and TV tests)."""

    batching: str
    chi_square: ChiSquareResult
    total_variation: TotalVariationResult
    acceptance_rate: float
    sequences: tuple[tuple[int, ...], ...]

    @property
    def passed(self) -> bool:
        return self.chi_square.passed and self.total_variation.passed


@dataclasses.dataclass(frozen=True)
class KernelCheckResult:
    """What `check_kernel` found: `invariance`, `sampling` (by driver), `drivers_identical`, the exact
    `law` they were tested against, `passed` (all of them) and a readable `report`."""

    name: str
    invariance: ConservationResult
    sampling: dict[str, SamplingCheck]
    drivers_identical: bool
    law: ExactLaw
    false_failure_rate: float
    passed: bool
    report: str

    @property
    def checks(self) -> dict[str, bool]:
        """Every check's verdict by name."""
        verdicts = {"invariance": self.invariance.passed}
        for batching, run in self.sampling.items():
            verdicts[f"{batching} chi-square"] = run.chi_square.passed
            verdicts[f"{batching} total variation"] = run.total_variation.passed
        verdicts["drivers identical"] = self.drivers_identical
        return verdicts

    def __str__(self) -> str:
        return self.report


def _proposal_factory(kernel: Any, config: PowerSamplerConfig, lm: LanguageModel) -> tuple[ProposalFactory, ProposalFactory | None, PowerSamplerConfig]:
    """(the stage proposals, what `power_sample(proposal=)` gets, the config) for a proposal factory,
    or for a cut rule put in the config (the default proposal, as a user gives a rule)."""
    if isinstance(kernel, (str, CutRule)):
        config = dataclasses.replace(config, cut_rule=kernel)
        return default_proposal(config, lm, lm), None, config
    if callable(kernel):
        return kernel, kernel, config
    raise TypeError(f"check_kernel takes a proposal factory (Stage -> SuffixProposal, as power_sample(proposal=) does) or a "
                    f"cut rule; got a {type(kernel).__name__} (wrap a proposal as `lambda stage: MyProposal(..., stage)`)")


def check_kernel(
    kernel: ProposalFactory | CutRule | str,
    lm: LanguageModel | str = "trigram",
    *,
    name: str | None = None,
    prompt: Sequence[int] = (),
    max_new_tokens: int = 4,
    alpha: float = 3.0,
    block_size: int = 2,
    temperature: float = 1.0,
    chains: int = 6000,
    steps: int = 60,
    conservation_chains: int = 20000,
    conservation_steps: int = 2,
    seed: int = 0,
    false_failure_rate: float = DEFAULT_FALSE_FAILURE_RATE,
    batchings: Sequence[str] = ("lockstep", "continuous"),
) -> KernelCheckResult:
    """Run the exact-law checks of `kernel` (module docstring) and return a `KernelCheckResult`.

    kernel: a proposal factory `Stage -> SuffixProposal` (what `power_sample(proposal=)` takes; it
        must propose with `lm`), or a cut rule object or name (the default proposal with that rule).
    lm: the target's LM, a `LanguageModel` small enough to enumerate S_n, or a toy name
        (`mcmc_llm.lm.toy`, default "trigram").
    temperature: the extension's (and the cut-rule kernel's) proposal temperature, as
        `PowerSamplerConfig.proposal_temperature`.
    Defaults are the how-to's (docs/howto_custom_kernels.md): about 15 s per kernel on one core.
    """
    lm = load_toy(lm) if isinstance(lm, str) else lm
    rate = _check_rate(false_failure_rate)
    chains, conservation_chains = _count("chains", chains), _count("conservation_chains", conservation_chains)
    steps, conservation_steps = _count("steps", steps), _count("conservation_steps", conservation_steps)
    batchings = tuple(batchings)
    if not batchings or any(batching not in BATCHING for batching in batchings):
        raise ValueError(f"batchings must name drivers among {', '.join(BATCHING)}; got {batchings!r}")
    config = PowerSamplerConfig(alpha=alpha, block_size=block_size, max_new_tokens=max_new_tokens, mcmc_steps=steps,
                                proposal_temperature=temperature)
    factory, proposal, config = _proposal_factory(kernel, config, lm)
    name = name if name is not None else getattr(kernel, "__name__", None) or repr(kernel)
    law = power_law(lm, max_new_tokens, alpha, prompt)
    invariance = _invariance_check(lm, law, config, factory, list(prompt), conservation_chains, conservation_steps, seed, rate)
    sampling = {batching: _sampling_check(lm, law, dataclasses.replace(config, batching=batching), proposal, list(prompt),
                                          chains, seed, rate) for batching in batchings}
    identical = len({run.sequences for run in sampling.values()}) == 1
    passed = invariance.passed and all(run.passed for run in sampling.values()) and identical
    result = KernelCheckResult(name, invariance, sampling, identical, law, rate, passed, "")
    return dataclasses.replace(result, report=kernel_report(result, config, conservation_chains, prompt))


def _invariance_check(lm, law, config, factory, prompt, chains, num_steps, seed, rate) -> ConservationResult:
    """`chains` exact draws of pi, `num_steps` MH steps of the last stage's kernel, the law after them."""
    draws = sample_exact(law, make_generator(seed), chains)
    start = SequenceBatch.from_sequences(lm, config.sampling_rule(), TokenBatch.from_lists([prompt] * chains), draws,
                                         capacity=config.max_new_tokens)
    kernel = MetropolisHastings(PowerTarget(config.alpha, config.max_new_tokens), factory(config.stages()[-1]))
    return conservation_check(kernel, start, lambda batch: map(tuple, batch.to_lists()), law.probs(), law.sequences,
                              seed=seed + 1, false_failure_rate=rate, num_steps=num_steps)


def _sampling_check(lm, law, config, proposal, prompt, chains, seed, rate) -> SamplingCheck:
    """Algorithm 1 with `chains` independent chains; their final sequences against pi."""
    result = power_sample(lm, [prompt], config, chains_per_prompt=chains, seed=seed, proposal=proposal)
    sequences = tuple(tuple(s) for s in result.sequences())
    counts = counts_from_samples(sequences, law.sequences)
    return SamplingCheck(config.batching, chi_square_check(counts, law.probs(), rate), total_variation_check(counts, law.probs(), rate),
                         result.trace.acceptance_rate(), sequences)


def kernel_report(result: KernelCheckResult, config: PowerSamplerConfig, conservation_chains: int, prompt: Sequence[int]) -> str:
    """The readable report of a `KernelCheckResult`: each check's statistic, verdict and power."""
    verdict = lambda ok: "pass" if ok else "FAILED"  # noqa: E731
    checks = len(result.checks) - 1
    invariance = result.invariance
    lines = [
        f"check_kernel {result.name}: target p^{config.alpha:g} on S_{config.max_new_tokens} ({len(result.law)} sequences, "
        f"prompt {list(prompt)}), blocks of {config.block_size}, proposal temperature {config.temperature:g}",
        f"false-failure rate {result.false_failure_rate:g} per check ({checks} statistical checks: an exact kernel fails with "
        f"probability <= {checks * result.false_failure_rate:.2g}); 'detects' = TV from pi found with probability >= {DEFAULT_POWER:g}",
        f"  invariance   {invariance.num_steps} step(s) from {conservation_chains} exact draws: accept {invariance.acceptance_rate:.3f}, "
        f"TV {invariance.chi_square.total_variation:.4f}, chi-square p {invariance.p_value:.3g}, detects TV >= "
        f"{invariance.min_detectable_tv:.3g}: {verdict(invariance.passed)}",
    ]
    for batching, run in result.sampling.items():
        chi2, tv = run.chi_square, run.total_variation
        lines.append(
            f"  sampling     {batching:<10} {chi2.num_samples} chains x {config.mcmc_steps} steps: accept {run.acceptance_rate:.3f}, "
            f"TV {tv.statistic:.4f} (threshold {tv.threshold:.4f}, detects TV >= {tv.min_detectable_tv:.3g}): {verdict(tv.passed)}; "
            f"chi-square p {chi2.p_value:.3g} (detects TV >= {chi2.min_detectable_tv:.3g}): {verdict(chi2.passed)}")
    lines.append(f"  drivers      identical chains in {', '.join(result.sampling)}: {verdict(result.drivers_identical)}")
    failed = [check for check, ok in result.checks.items() if not ok]
    lines.append(f"verdict: {'PASSED' if result.passed else 'FAILED (' + ', '.join(failed) + ')'}; a kernel whose law is "
                 f"closer to pi than the detectable TVs above may pass")
    return "\n".join(lines)


__all__ = ["KernelCheckResult", "SamplingCheck", "check_kernel", "kernel_report"]
