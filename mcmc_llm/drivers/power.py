"""The block-wise power sampler (Algorithm 1 of Karan & Du), batched over prompts and chains.

    x <- prompt
    for k in 1..K:                       (K = ceil(T_max / B); stage cap n_k = min(kB, T_max))
        extend x by up to B tokens from p_prop    (skipped once x has ended with EOS)
        repeat N_MCMC times: one MH step targeting pi_k ∝ target on S_{n_k}
    return x

The MH step is `MetropolisHastings(stage target, proposal)`.  The proposal is any two-phase
`SuffixProposal` (`mcmc_llm.core.protocols`): by default `SuffixResampling` with the config's cut
rule (a registry name or any `CutRule` object) and sampling rule; `power_sample(proposal=...)`
takes a function `Stage -> SuffixProposal` for anything else (another LM, top-k, a mixture, a
temperature schedule).  Any sequence target (power, product, reward-tilted) plugs in.  With
`alpha = inf` the kernel uses the max-swap rule.

`config.batching` says how the chains share the batch: "continuous" (default) runs every chain
asynchronously on one continuously refilled batch (`mcmc_llm.drivers.asynchronous`), "lockstep"
runs the loop above with every chain taking each step together.

Random streams.  Chain c of prompt i draws only from its own stream, keyed by (seed, i, c):
stage k's extension from `stream.split(k).split("extend")`, its MH step j (0-based) from
`stream.split(k).split(j)` (labels inside a step: `mcmc_llm.core.protocols`).  So a chain's
draws do not depend on the number of chains or prompts, on the batching or on pre-fetching:
on an LM whose log-probabilities do not depend on the batch (the toy LMs) the chains are
identical, which also gives common random numbers across kernels for mixing studies.

Laws reached as N_MCMC -> inf (see docs/method.md): uniform / restart / priority / entropy
cuts: the target on S_{T_max}; within-block cuts: the nested law prod_k pi(block_k | earlier).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mcmc_llm.core.random import Streams
from mcmc_llm.core.recorder import TraceRecorder
from mcmc_llm.core.deprecation import deprecated_name
from mcmc_llm.core.protocols import TOKENS, SuffixProposal
from mcmc_llm.core.trace import Trace
from mcmc_llm.kernels.suffix_mh import SuffixMH
from mcmc_llm.lm.prompts import encode_prompts, register_prompts
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sampling import SamplingRule, TemperedProposal
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.lm.text import completion_text
from mcmc_llm.drivers.asynchronous import run_asynchronous_chains
from mcmc_llm.drivers.published_chain import PUBLISHED_TOP_K, published_chain
from mcmc_llm.proposals.cut_rules import CutRule, resolve_cut_rule
from mcmc_llm.proposals.published_ratio import PublishedRatioSuffix
from mcmc_llm.drivers.extension import extend
from mcmc_llm.proposals.suffix import SuffixResampling
from mcmc_llm.targets.sequence import PowerTarget, check_alpha


BATCHING = ("continuous", "lockstep")
RATIOS = ("exact", "published", "reference")


class Stage(NamedTuple):
    """Stage k of Algorithm 1 (0-based `index`): its length cap n_k and first position (k * B)."""

    index: int
    cap: int
    block_start: int


@dataclasses.dataclass(frozen=True)
class PowerSamplerConfig(TemperedProposal):
    """Settings of Algorithm 1 (defaults: the paper's).

    cut_rule: a registry name ("uniform", "within-block", "restart", "priority", "entropy") or any
        `CutRule` object (`mcmc_llm.proposals.cut_rules`).  `kernel` is its old name, still accepted.
    proposal_temperature: None means 1/alpha (0.25 when alpha is inf).
    cut_sharpness: beta of the priority and entropy cut rules given by name.
    ratio: "exact"; "published" for the reference code's biased ratio inside our chain; or
        "reference" for a faithful copy of the reference code's whole chain (proposal length,
        top-k 50 unless `top_k` is set, ratio, early stop at EOS; `drivers.published_chain`,
        always lock-step).  The last two are for comparisons only.
    batching: "continuous" (chains step asynchronously and share one continuously refilled batch,
        `mcmc_llm.drivers.asynchronous`) or "lockstep" (all chains take each step together, as the
        algorithm is written).  Same kernels, same random streams: the same chains.
    prefetch: with continuous batching, rows no chain's current request needs pre-fetch each
        chain's next proposal for both outcomes of its MH step in flight
        (`mcmc_llm.drivers.asynchronous`); same law and same chains.  Lock-step chains do not use it.
    early_reject: stop a proposal as soon as its move is certain to be rejected, where that is
        exact (`mcmc_llm.kernels.suffix_mh`: the target `alpha log p`, proposal temperature in
        [1/alpha, 1], a cut rule with a reverse bound); same chains, fewer tokens.
    """

    alpha: float = 4.0
    block_size: int = 192
    max_new_tokens: int = 3072
    mcmc_steps: int = 10
    cut_rule: Any = "uniform"
    proposal_temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    cut_sharpness: float = 1.0
    ratio: str = "exact"
    batching: str = "continuous"
    prefetch: bool = True
    early_reject: bool = True
    kernel: dataclasses.InitVar[str | None] = None  # the old name of `cut_rule` (init-only: read `cut_rule`)

    def __post_init__(self, kernel):
        if kernel is not None:
            if self.cut_rule != "uniform" and self.cut_rule != kernel:
                raise ValueError(f"got cut_rule={self.cut_rule!r} and its old name kernel={kernel!r}; give one")
            deprecated_name("PowerSamplerConfig(kernel=...)", "cut_rule=", stacklevel=4)
            object.__setattr__(self, "cut_rule", kernel)
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
        self.cut_rule_object()  # validates the name or the object
        if self.ratio not in RATIOS:
            raise ValueError(f"unknown ratio {self.ratio!r}; allowed: exact, published (the reference code's biased ratio), "
                             "reference (a copy of the reference code's whole chain)")
        if self.ratio == "reference" and math.isinf(self.alpha):
            raise ValueError("ratio='reference' copies the reference code's mcmc_power_samp, which needs a finite alpha")
        if self.batching not in BATCHING:
            raise ValueError(f"unknown batching {self.batching!r}; allowed: {', '.join(BATCHING)}")
        for name in ("prefetch", "early_reject"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self.sampling_rule()  # validates temperature / top-k / top-p

    def cut_rule_object(self) -> CutRule:
        """The cut rule as an object (`resolve_cut_rule`)."""
        return resolve_cut_rule(self.cut_rule, self.cut_sharpness)

    def sampling_rule(self) -> SamplingRule:
        """The proposal's rule (`TemperedProposal`); the reference chain's default top-k is the published 50."""
        rule = super().sampling_rule()
        return dataclasses.replace(rule, top_k=PUBLISHED_TOP_K) if self.ratio == "reference" and self.top_k is None else rule

    @property
    def num_stages(self) -> int:
        return math.ceil(self.max_new_tokens / self.block_size)

    def stage_cap(self, stage: int) -> int:
        """Length cap n_k of 0-based stage k."""
        return min((stage + 1) * self.block_size, self.max_new_tokens)

    def stages(self) -> list[Stage]:
        return [Stage(k, self.stage_cap(k), k * self.block_size) for k in range(self.num_stages)]


def power_token_budget(config: PowerSamplerConfig, length: float | None = None) -> float:
    """Expected tokens sampled by one chain of Algorithm 1 whose sequences have `length` tokens
    (default: the cap `config.max_new_tokens`) and draw no early EOS (METHOD §4):

        T + N_MCMC * sum_{k=1}^{K} E[tokens resampled at stage k],   K = ceil(T / B),

    E from the cut rule (`CutRule.expected_resampled` at length min(kB, T)): (L + 1) / 2 for
    uniform cuts (≈ N T^2 / (4B) + T), (block length + 1) / 2 within the block (≈ N T / 2 + T),
    L for restarts; the uniform estimate for rules that read more than lengths.  The one place
    this formula lives (compute-matched baselines and the accounting experiment use it)."""
    cap = config.max_new_tokens
    length = float(cap if length is None else min(length, cap))
    if length <= 0:
        raise ValueError(f"expected length must be positive, got {length}")
    rule = config.cut_rule_object()
    block = config.block_size
    resampled = 0.0
    for stage in range(1, math.ceil(length / block) + 1):
        current = min(stage * block, length)
        resampled += _expected_at(rule, current, (stage - 1) * block)
    return length + config.mcmc_steps * resampled


def _expected_at(rule: CutRule, length: float, block_start: int) -> float:
    """`rule.expected_resampled` at a possibly fractional length (linear between integers)."""
    low = int(math.floor(length))
    if low == length or low < 1:
        return rule.expected_resampled(max(int(round(length)), 1), block_start)
    share = length - low
    return (1 - share) * rule.expected_resampled(low, block_start) + share * rule.expected_resampled(low + 1, block_start)


def token_log_probs(batch: SequenceBatch) -> list[list[float]]:
    """`log p(x_t | prompt, x_<t)` of every generated token of each chain, under the reference model
    (the cached per-token `log_p`); row c sums to `batch.total_log_p()[c]`."""
    log_p = batch.log_p.cpu()
    return [log_p[row, :length].tolist() for row, length in enumerate(batch.lengths.tolist())]


@dataclasses.dataclass
class PowerSampleResult:
    """Final sequences (one per chain; chains of prompt i are rows i*C .. i*C + C - 1), the
    per-step trace (chain, draw) over all stages, the LM's compute counters, and the reference
    model `lm` (which decodes the sequences)."""

    final: SequenceBatch
    trace: Trace | None
    chains_per_prompt: int
    compute: dict[str, int]
    lm: LanguageModel | None = dataclasses.field(default=None, repr=False, compare=False)

    def sequences(self) -> list[list[int]]:
        return self.final.to_lists()

    def texts(self, *, skip_special_tokens: bool = True) -> list[str]:
        """Each chain's generated text (`mcmc_llm.lm.text.completion_text`): special tokens such as
        EOS left out unless skip_special_tokens=False (as transformers' `decode`)."""
        if self.lm is None:
            raise ValueError("this result holds no model to decode with; decode `sequences()` with the model's decode")
        return [completion_text(self.lm, tokens, skip_special_tokens) for tokens in self.sequences()]

    def token_logprobs(self) -> list[list[float]]:
        """Each chain's per-token base log-probabilities `log p(x_t | prompt, x_<t)`, one per token of
        `sequences()`; each list sums to the chain's `log p(x)` (`token_log_probs`)."""
        return token_log_probs(self.final)

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


ProposalFactory = Callable[[Stage], SuffixProposal]


def default_proposal(config: PowerSamplerConfig, proposer: LanguageModel, reference_lm: LanguageModel) -> ProposalFactory:
    """The config's proposal at every stage: suffix resampling by `proposer` with the config's
    sampling rule and cut rule (with the published ratio when `config.ratio` says so)."""
    rule, cut_rule = config.sampling_rule(), config.cut_rule_object()

    def at(stage: Stage) -> SuffixProposal:
        options = dict(block_start=stage.block_start, reference_lm=reference_lm)
        if config.ratio == "published":
            return PublishedRatioSuffix(proposer, rule, cut_rule, stage.cap, alpha=config.alpha, **options)
        return SuffixResampling(proposer, rule, cut_rule, stage.cap, **options)

    return at


def check_proposal_settings(config: PowerSamplerConfig) -> None:
    """With `power_sample(proposal=...)` the factory's proposals make every MH move: the config's
    `cut_rule` (with `cut_sharpness`) and `ratio="published"` only build the default proposal, so a
    non-default value of either would be ignored, and is a ValueError.  The extension still uses the
    config's sampling rule (`proposal_temperature`, `top_k`, `top_p`) and `proposal_lm`."""
    if config.cut_rule_object() != resolve_cut_rule("uniform"):
        raise ValueError(f"cut_rule={config.cut_rule!r} has no effect with proposal=: the proposal draws its own cuts; "
                         "give the cut rule to the proposal and leave cut_rule at 'uniform'")
    if config.ratio == "published":
        raise ValueError("ratio='published' has no effect with proposal=: the proposal computes its own log q terms")


def chain_streams(seed: int, prompts: int, chains_per_prompt: int) -> Streams:
    """The root stream of every chain, rows i*C .. i*C + C - 1 for prompt i, keyed by (seed, i, c)."""
    rows = torch.arange(prompts * chains_per_prompt)
    return Streams.for_chains(seed, rows // chains_per_prompt, rows % chains_per_prompt)


def power_sample(
    lm: LanguageModel,
    prompts: Sequence[str | Sequence[int] | None],
    config: PowerSamplerConfig,
    *,
    chains_per_prompt: int = 1,
    seed: int = 0,
    target=None,
    proposal_lm: LanguageModel | None = None,
    proposal: ProposalFactory | None = None,
    progress: bool = False,
    truncate_prompt: str | None = None,
) -> PowerSampleResult:
    """Run Algorithm 1 for every prompt with `chains_per_prompt` independent chains, all batched.

    prompts: each a text (encoded by `lm`'s tokenizer, through its chat template when `lm` was
        loaded with one), a list of token ids, or None (`mcmc_llm.lm.prompts.encode_prompts`; a
        model without a tokenizer reads text as token ids "3 1 4" and refuses other text).  Each
        must leave room for `config.max_new_tokens` in the model's context; truncate_prompt="left"
        keeps the end of a longer one instead of raising ValueError.

    target: a sequence target with `with_cap(n)` (default `PowerTarget(config.alpha, T_max)`);
    proposal_lm: the LM that extends and, by default, proposes (default `lm`, the reference model
        of the target);
    proposal: `Stage -> SuffixProposal`, the MH proposal of each stage (default: `default_proposal`).
        Any two-phase suffix proposal works in both batchings, e.g. `MixtureProposal`, a proposal
        from a second LM, or one whose temperature depends on `stage.index`.
    """
    if isinstance(chains_per_prompt, bool) or not isinstance(chains_per_prompt, int) or chains_per_prompt < 1:
        raise ValueError(f"chains_per_prompt must be a positive integer, got {chains_per_prompt!r}")
    prompts = encode_prompts(lm, prompts, config.max_new_tokens, truncate_prompt)
    if len(prompts) == 0:
        raise ValueError("power_sample needs at least one prompt, got none")
    proposer = proposal_lm if proposal_lm is not None else lm
    if config.ratio == "reference" and (target is not None or proposal is not None):
        raise ValueError("ratio='reference' runs the reference code's own chain: it takes no target or proposal")
    if proposal is not None:
        check_proposal_settings(config)
    target = target if target is not None else PowerTarget(config.alpha, config.max_new_tokens)
    make_proposal = proposal if proposal is not None else default_proposal(config, proposer, lm)
    register_prompts([proposer], prompts)
    repeated = [prompt for prompt in prompts for _ in range(chains_per_prompt)]
    prompt_batch = TokenBatch.from_lists(repeated, device=proposer.device)
    position = SequenceBatch.empty(prompt_batch, config.max_new_tokens)
    streams = chain_streams(seed, len(prompts), chains_per_prompt)
    start_compute = proposer.counter.snapshot()
    rule_name = "max_swap" if getattr(target, "max_swap", False) else "metropolis"
    kernels = []
    for stage in config.stages():
        stage_proposal = make_proposal(stage)
        if not isinstance(stage_proposal, SuffixProposal):
            raise TypeError(
                f"the proposal for stage {stage.index} is a {type(stage_proposal).__name__}, not a two-phase suffix "
                "proposal (it needs plan(source, position), complete(position, plan, continuation) and reads_lengths_only)"
            )
        kernels.append(SuffixMH(target.with_cap(stage.cap), stage_proposal, rule=rule_name, early_reject=config.early_reject))
    recorder = TraceRecorder(len(repeated), config.num_stages * config.mcmc_steps, _functionals())
    if config.ratio == "reference":
        position, trace = published_chain(config, proposer, lm, position, streams, progress)
    elif config.batching == "continuous":
        position, trace = run_asynchronous_chains(
            proposer, config.sampling_rule(), position, kernels, [stage.cap for stage in config.stages()], config.mcmc_steps,
            streams, recorder, reference_lm=lm, prefetch=config.prefetch, early_reject=config.early_reject, progress=progress,
        )
    else:
        position, trace = _lockstep(config, proposer, lm, kernels, position, streams, recorder, progress)
    end_compute = proposer.counter.snapshot()
    spent = {key: end_compute[key] - start_compute[key] for key in end_compute}
    return PowerSampleResult(position, trace, chains_per_prompt, spent, lm=lm)


def _lockstep(config, proposer, lm, kernels, position, streams, recorder, progress):
    """Algorithm 1 as written: every chain extends, then every chain takes each MH step, together."""
    chains, steps = position.num_chains, config.mcmc_steps
    stage_of_draw = np.repeat(np.arange(config.num_stages), steps)[None].repeat(chains, 0)
    extension_tokens = np.zeros((chains, config.num_stages * steps), dtype=np.int64)
    bar = tqdm(total=config.num_stages * (steps + 1), desc="blocks (lock-step)", disable=not progress, leave=False)
    for stage, kernel in zip(config.stages(), kernels):
        stage_streams = streams.split(stage.index)
        length_before = position.lengths
        position = extend(proposer, config.sampling_rule(), position, stage.cap, stage_streams.split("extend").split(TOKENS), reference_lm=lm)
        bar.update(1)
        if steps == 0:
            continue
        extension_tokens[:, stage.index * steps] = (position.lengths - length_before).cpu().numpy()  # at the stage's first step
        state = kernel.init(position)
        for step in range(steps):
            state, info = kernel.step(stage_streams.split(step), state)
            recorder.record(slice(None), stage.index * steps + step, state, info)
            recorder.stat("prefetched", slice(None), stage.index * steps + step, torch.zeros(chains, dtype=torch.bool))  # never, in lock-step
            bar.update(1)
        position = state.position
    bar.close()
    return position, recorder.trace(stage=stage_of_draw, extension_tokens=extension_tokens)
