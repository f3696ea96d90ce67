"""The block-wise power sampler (Algorithm 1 of Karan & Du), batched over prompts and chains.

    x <- prompt
    for k in 1..K:                       (K = ceil(T_max / B); stage cap n_k = min(kB, T_max))
        extend x by up to B tokens from p_prop    (skipped once x has ended with EOS)
        repeat N_MCMC times: one MH step targeting pi_k ∝ target on S_{n_k}
    return x

The MH step is `MetropolisHastings(stage target, SuffixResampling(cut rule))`, so any cut rule
(uniform, within-block, restart, priority, entropy) and any sequence target (power, product,
reward-tilted) plug in.  With `alpha = inf` the kernel uses the max-swap rule.

`config.batching` says how the chains share the batch: "continuous" (default) runs every chain
asynchronously on one continuously refilled batch (`mcmc_llm.drivers.asynchronous`), "lockstep" runs
the loop above with every chain taking each step together.  Same kernels, same law.

Laws reached as N_MCMC -> inf (see docs/method.md): uniform / restart / priority / entropy
cuts: the target on S_{T_max}; within-block cuts: the nested law prod_k pi(block_k | earlier).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from mcmc_llm.drivers.chains import run_chains
from mcmc_llm.kernels.mh import MetropolisHastings
from mcmc_llm.core.random import make_generator
from mcmc_llm.core.trace import Trace
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.drivers.asynchronous import run_asynchronous_chains
from mcmc_llm.proposals.cut_rules import CUT_RULES, CutRule
from mcmc_llm.proposals.published_ratio import PublishedRatioSuffix
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.suffix import SuffixResampling, extend
from mcmc_llm.targets.sequence import PowerTarget, check_alpha


BATCHING = ("continuous", "lockstep")


@dataclasses.dataclass(frozen=True)
class PowerSamplerConfig:
    """Settings of Algorithm 1 (defaults: the paper's).

    proposal_temperature: None means 1/alpha (0.25 when alpha is inf).
    cut_sharpness: beta of the priority and entropy cut rules.
    ratio: "exact", or "published" for the reference code's biased ratio (comparisons only).
    batching: "continuous" (chains step asynchronously and share one continuously refilled batch,
        `mcmc_llm.drivers.asynchronous`) or "lockstep" (all chains take each step together, as the
        algorithm is written).  Both run the same kernels and reach the same law; they consume the
        random stream in different orders, so a seed gives different (equally valid) chains.
    prefetch: with continuous batching, rows no chain's current request needs pre-fetch each
        chain's next proposal for both outcomes of its MH step in flight
        (`mcmc_llm.drivers.asynchronous`); same law, different draws for a seed.  Lock-step chains
        do not use it.
    """

    alpha: float = 4.0
    block_size: int = 192
    max_new_tokens: int = 3072
    mcmc_steps: int = 10
    kernel: str = "uniform"
    proposal_temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    cut_sharpness: float = 1.0
    ratio: str = "exact"
    batching: str = "continuous"
    prefetch: bool = True

    def __post_init__(self):
        check_alpha(self.alpha)
        for name in ("block_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.mcmc_steps, bool) or not isinstance(self.mcmc_steps, int) or self.mcmc_steps < 0:
            raise ValueError(f"mcmc_steps must be a non-negative integer, got {self.mcmc_steps!r}")
        if self.block_size > self.max_new_tokens:
            raise ValueError(
                f"block_size {self.block_size} is larger than max_new_tokens {self.max_new_tokens}; "
                "a block must fit within the length cap"
            )
        if self.kernel not in CUT_RULES:
            raise ValueError(f"unknown kernel {self.kernel!r}; allowed: {', '.join(CUT_RULES)}")
        if self.ratio not in ("exact", "published"):
            raise ValueError(f"unknown ratio {self.ratio!r}; allowed: exact, published (the reference code's biased ratio)")
        if self.batching not in BATCHING:
            raise ValueError(f"unknown batching {self.batching!r}; allowed: {', '.join(BATCHING)}")
        if not isinstance(self.prefetch, bool):
            raise ValueError(f"prefetch must be true or false, got {self.prefetch!r}")
        self.sampling_rule()  # validates temperature / top-k / top-p
        CutRule(self.kernel, self.cut_sharpness)

    @property
    def temperature(self) -> float:
        if self.proposal_temperature is not None:
            return self.proposal_temperature
        return 0.25 if math.isinf(self.alpha) else 1.0 / self.alpha

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(self.temperature, self.top_k, self.top_p)

    @property
    def num_stages(self) -> int:
        return math.ceil(self.max_new_tokens / self.block_size)

    def stage_cap(self, stage: int) -> int:
        """Length cap n_k of 0-based stage k."""
        return min((stage + 1) * self.block_size, self.max_new_tokens)


@dataclasses.dataclass
class PowerSampleResult:
    """Final sequences (one per chain; chains of prompt i are rows i*C .. i*C + C - 1), the
    per-step trace (chain, draw) over all stages, and the LM's compute counters."""

    final: SequenceBatch
    trace: Trace | None
    chains_per_prompt: int
    compute: dict[str, int]

    def sequences(self) -> list[list[int]]:
        return self.final.to_lists()

    def chain_trace(self, prompt_index: int) -> Trace | None:
        """The trace of one prompt's chains (for R-hat / ESS across them)."""
        if self.trace is None:
            return None
        rows = slice(prompt_index * self.chains_per_prompt, (prompt_index + 1) * self.chains_per_prompt)
        return Trace(
            samples={name: value[rows] for name, value in self.trace.samples.items()},
            stats={name: value[rows] for name, value in self.trace.stats.items()},
        )


def _functionals() -> dict[str, Any]:
    return {
        "log_p": lambda batch: batch.total_log_p(),
        "length": lambda batch: batch.lengths,
    }


def _concatenate(traces: Sequence[Trace]) -> Trace | None:
    if not traces:
        return None
    join = lambda key, group: np.concatenate([getattr(t, group)[key] for t in traces], axis=1)  # noqa: E731
    return Trace(
        samples={key: join(key, "samples") for key in traces[0].samples},
        stats={key: join(key, "stats") for key in traces[0].stats},
    )


def _proposal(config, proposer, rule, cut_rule, cap, block_start, reference_lm) -> SuffixResampling:
    if config.ratio == "published":
        return PublishedRatioSuffix(
            proposer, rule, cut_rule, cap, block_start=block_start, reference_lm=reference_lm, alpha=config.alpha
        )
    return SuffixResampling(proposer, rule, cut_rule, cap, block_start=block_start, reference_lm=reference_lm)


def power_sample(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    config: PowerSamplerConfig,
    *,
    chains_per_prompt: int = 1,
    seed: int = 0,
    target=None,
    proposal_lm: LanguageModel | None = None,
    progress: bool = False,
) -> PowerSampleResult:
    """Run Algorithm 1 for every prompt with `chains_per_prompt` independent chains, all batched.

    target: a sequence target with `with_cap(n)` (default `PowerTarget(config.alpha, T_max)`);
    proposal_lm: the LM that proposes (default `lm`, the reference model of the target).
    """
    if isinstance(chains_per_prompt, bool) or not isinstance(chains_per_prompt, int) or chains_per_prompt < 1:
        raise ValueError(f"chains_per_prompt must be a positive integer, got {chains_per_prompt!r}")
    if len(prompts) == 0:
        raise ValueError("power_sample needs at least one prompt, got none")
    proposer = proposal_lm if proposal_lm is not None else lm
    target = target if target is not None else PowerTarget(config.alpha, config.max_new_tokens)
    rule = config.sampling_rule()
    cut_rule = CutRule(config.kernel, config.cut_sharpness)
    register = getattr(proposer, "register_prefix", None)
    if callable(register):
        for prompt in prompts:
            register(list(prompt))
    repeated = [list(prompt) for prompt in prompts for _ in range(chains_per_prompt)]
    prompt_batch = TokenBatch.from_lists(repeated, device=proposer.device)
    position = SequenceBatch.empty(prompt_batch, config.max_new_tokens)
    generator = make_generator(seed)
    start_compute = proposer.counter.snapshot()
    kernels = [
        MetropolisHastings(
            target.with_cap(config.stage_cap(stage)),
            _proposal(config, proposer, rule, cut_rule, config.stage_cap(stage), stage * config.block_size, lm),
            rule="max_swap" if getattr(target, "max_swap", False) else "metropolis",
        )
        for stage in range(config.num_stages)
    ]
    if config.batching == "continuous":
        caps = [config.stage_cap(stage) for stage in range(config.num_stages)]
        position, trace = run_asynchronous_chains(
            proposer, rule, position, kernels, caps, config.mcmc_steps, generator,
            reference_lm=lm, functionals=_functionals(), prefetch=config.prefetch, progress=progress,
        )
    else:
        position, trace = _lockstep(config, proposer, lm, rule, kernels, position, generator, progress)
    end_compute = proposer.counter.snapshot()
    spent = {key: end_compute[key] - start_compute[key] for key in end_compute}
    return PowerSampleResult(position, trace, chains_per_prompt, spent)


def _lockstep(config, proposer, lm, rule, kernels, position, generator, progress):
    """Algorithm 1 as written: every chain extends, then every chain takes each MH step, together."""
    traces = []
    for stage, kernel in enumerate(kernels):
        length_before = position.lengths
        position = extend(proposer, rule, position, config.stage_cap(stage), generator, reference_lm=lm)
        if config.mcmc_steps == 0:
            continue
        stage_trace = run_chains(
            kernel, position, config.mcmc_steps, functionals=_functionals(), generator=generator,
            progress=progress, description=f"block {stage + 1}/{config.num_stages}",
        )
        stage_trace.stats["stage"] = np.full_like(stage_trace.stats["accepted"], stage, dtype=np.int64)
        extension = np.zeros_like(stage_trace.stats["stage"])
        extension[:, 0] = (position.lengths - length_before).cpu().numpy()
        stage_trace.stats["extension_tokens"] = extension  # tokens the stage's extension sampled, at its first step
        stage_trace.stats["prefetched"] = np.zeros_like(stage_trace.stats["accepted"], dtype=bool)  # never, in lock-step
        traces.append(stage_trace)
        position = stage_trace.final_state.position
    return position, _concatenate(traces)
