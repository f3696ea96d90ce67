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

This module runs the sampler.  Its settings (`PowerSamplerConfig`, `Stage`) are in
`mcmc_llm.drivers.power_config`, the expected token cost (`power_token_budget`) in
`mcmc_llm.drivers.power_budget`, the result (`PowerSampleResult`, `token_log_probs`) in
`mcmc_llm.drivers.power_result`; all are re-exported here.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mcmc_llm.core.protocols import TOKENS, SuffixProposal
from mcmc_llm.core.random import Streams
from mcmc_llm.core.recorder import TraceRecorder
from mcmc_llm.core.validate import integer
from mcmc_llm.drivers.asynchronous import run_asynchronous_chains
from mcmc_llm.drivers.extension import extend
from mcmc_llm.drivers.power_budget import power_token_budget
from mcmc_llm.drivers.power_config import BATCHING, RATIOS, PowerSamplerConfig, Stage, check_proposal_settings
from mcmc_llm.drivers.power_result import PowerSampleResult, token_log_probs
from mcmc_llm.drivers.published_chain import published_chain
from mcmc_llm.kernels.suffix_mh import SuffixMH
from mcmc_llm.lm.prompts import encode_prompts, register_prompts
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch, spent
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.published_ratio import PublishedRatioSuffix
from mcmc_llm.proposals.suffix import SuffixResampling
from mcmc_llm.targets.sequence import PowerTarget


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


def chain_streams(seed: int | Sequence[int], prompts: int, chains_per_prompt: int) -> Streams:
    """The root stream of every chain, rows i*C .. i*C + C - 1 for prompt i: keyed by (seed, i, c),
    or, with one seed per prompt (`seed[i]`), by (seed[i], 0, c), so that a prompt's chains do not
    depend on which other prompts share the call."""
    rows = torch.arange(prompts * chains_per_prompt)
    if isinstance(seed, (list, tuple)):
        if len(seed) != prompts:
            raise ValueError(f"seed: one per prompt expected ({prompts}), got {len(seed)}")
        per_row = [value for value in seed for _ in range(chains_per_prompt)]
        return Streams.for_chains(per_row, 0, rows % chains_per_prompt)
    return Streams.for_chains(seed, rows // chains_per_prompt, rows % chains_per_prompt)


def power_sample(
    lm: LanguageModel,
    prompts: Sequence[str | Sequence[int] | None],
    config: PowerSamplerConfig,
    *,
    chains_per_prompt: int = 1,
    seed: int | Sequence[int] = 0,
    target=None,
    proposal_lm: LanguageModel | None = None,
    proposal: ProposalFactory | None = None,
    progress: bool = False,
    truncate_prompt: str | None = None,
) -> PowerSampleResult:
    """Run Algorithm 1 for every prompt with `chains_per_prompt` independent chains, all batched.

    Parameters:
    lm: the base model p of the target p^alpha (and, by default, the proposal's LM).
    config: the `PowerSamplerConfig` (alpha, block size B, cap T_max, N_MCMC, cut rule, ...).
    chains_per_prompt: C; prompt i's chains are rows i*C .. i*C + C - 1 of the result.
    progress: show a progress bar (stderr).
    prompts: each a text (encoded by `lm`'s tokenizer, through its chat template when `lm` was
        loaded with one), a list of token ids, or None (`mcmc_llm.lm.prompts.encode_prompts`; a
        model without a tokenizer reads text as token ids "3 1 4" and refuses other text).  Each
        must leave room for `config.max_new_tokens` in the model's context; truncate_prompt="left"
        keeps the end of a longer one instead of raising ValueError.

    seed: one int >= 0 (chain c of prompt i draws from the stream keyed (seed, i, c)), or a list
        with one seed per prompt (stream (seed[i], 0, c): a prompt's chains are then the same
        whichever prompts share the call, which lets a runner batch any number of problems).
    target: a sequence target with `with_cap(n)` (default `PowerTarget(config.alpha, T_max)`);
    proposal_lm: the LM that extends and, by default, proposes (default `lm`, the reference model
        of the target);
    proposal: `Stage -> SuffixProposal`, the MH proposal of each stage (default: `default_proposal`).
        Any two-phase suffix proposal works in both batchings, e.g. `MixtureProposal`, a proposal
        from a second LM, or one whose temperature depends on `stage.index`.
    """
    chains_per_prompt = integer("chains_per_prompt", chains_per_prompt)
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
    compute = spent(start_compute, proposer.counter.snapshot())
    return PowerSampleResult(position, trace, chains_per_prompt, compute, lm=lm)


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


__all__ = [  # the config, budget and result live in their own modules; this one runs the sampler
    "BATCHING", "RATIOS", "PowerSampleResult", "PowerSamplerConfig", "ProposalFactory", "Stage", "chain_streams",
    "check_proposal_settings", "default_proposal", "power_sample", "power_token_budget", "token_log_probs",
]
