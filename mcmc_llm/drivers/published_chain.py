"""A faithful, batched copy of the published sampler's whole chain (`ratio="reference"`).

The authors' `mcmc_power_samp` (aakaran/reasoning-with-sampling,
`llm_experiments/power_samp_utils.py`) differs from Algorithm 1 as we run it in four places, and
this driver copies all four (`ratio="published"` copies only the third):

1. **Proposal length.**  A proposal cut at m regenerates at most `L - m` tokens, L the *current*
   length (`naive_temp(p, gen[:idx], temp, seq_len=t)` with `t = len(gen)`), not up to the stage
   cap.  From a sequence that ended with EOS at length L it can propose an unterminated sequence
   of the same length L, which is outside S_n.  The extension adds B tokens to the current length
   (`seq_len = jump_size + len(gen)`), so block boundaries drift once a move shortens a sequence.
2. **Top-k 50.**  `generate`'s default top-k = 50 truncates every proposal and extension (the
   config's `top_k`, 50 unless set); the ratio's log q are the truncated law's.
3. **The ratio** (`PublishedRatioSuffix`): the current suffix is truncated to the proposal's
   length and the cut-index term is dropped,
       log A = alpha [sum_{t=m}^{L'-1} log p(x'_t) - sum_{t=m}^{min(L,L')-1} log p(x_t)]
             + sum_{t=m}^{min(L,L')-1} log q(x_t) - sum_{t=m}^{L'-1} log q(x'_t),
   with the cut m uniform over all generated positions; any sequence is a valid state (there is
   no S_n membership test).
4. **Early stop.**  After a block's N_MCMC steps, a chain whose generated text contains EOS stops:
   it takes no further extension or MH step.  (The published code also scans the prompt for EOS;
   that is not copied, since it depends on the chat template rather than on the method.)

The chains run lock-step (as the published code's loop does), with the same per-chain random
streams as `power_sample`'s lock-step driver: the extension of stage k from
`root.split(k).split("extend")`, MH step j from `root.split(k).split(j)`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from mcmc_llm.core.protocols import TOKENS
from mcmc_llm.core.random import Streams
from mcmc_llm.core.recorder import TraceRecorder
from mcmc_llm.core.tree import gather_chains, scatter_chains
from mcmc_llm.kernels.mh import MetropolisHastings
from mcmc_llm.lm.generation import sample_continuations
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.cut_rules import UniformCut
from mcmc_llm.proposals.published_ratio import PublishedRatioSuffix
from mcmc_llm.drivers.extension import complete_extension
from mcmc_llm.proposals.suffix import CutPlan

#: The top-k of `transformers`' `generate` by default, which the published chain samples under.
PUBLISHED_TOP_K = 50


@dataclasses.dataclass(frozen=True)
class AnyLengthPowerTarget:
    """`alpha log p(x)` for any sequence, terminated or not, of any length: the quantity the
    published ratio compares.  It is not a distribution on S_n; it only scores moves."""

    alpha: float
    max_swap = False

    def with_cap(self, max_new_tokens: int) -> "AnyLengthPowerTarget":
        return self

    def log_prob(self, batch: SequenceBatch) -> torch.Tensor:
        return self.alpha * batch.total_log_p()


class CurrentLengthSuffix(PublishedRatioSuffix):
    """The published proposal: a uniform cut m over the L generated positions, then at most
    `L - m` new tokens (the current length, not the stage cap), scored with the published ratio."""

    def __init__(self, lm, rule, capacity: int, *, alpha: float, reference_lm=None):
        super().__init__(lm, rule, UniformCut(), capacity, alpha=alpha, reference_lm=reference_lm)

    def plan(self, source, position: SequenceBatch) -> CutPlan:
        plan = super().plan(source, position)
        budget = torch.where(plan.movable, position.lengths - plan.cut_index, torch.zeros_like(plan.cut_index))
        return dataclasses.replace(plan, max_new_tokens=budget)


def published_chain(config, proposer, lm, position: SequenceBatch, streams: Streams, progress: bool = False):
    """Run the published chain from the empty `position` (one row per chain); returns (final
    position, trace).  The trace's `active` stat marks the cells that are real steps; a stopped
    chain's later cells repeat its last state, with `accepted` NaN."""
    if math.isinf(config.alpha):
        raise ValueError("ratio='reference' copies mcmc_power_samp, which needs a finite alpha")
    rule = config.sampling_rule()
    chains, steps, block = position.num_chains, config.mcmc_steps, config.block_size
    kernel = MetropolisHastings(
        AnyLengthPowerTarget(config.alpha),
        CurrentLengthSuffix(proposer, rule, config.max_new_tokens, alpha=config.alpha, reference_lm=lm),
    )
    draws = config.num_stages * steps
    recorder = TraceRecorder(chains, draws, {"log_p": lambda batch: batch.total_log_p(), "length": lambda batch: batch.lengths})
    active_cells = np.zeros((chains, draws), dtype=bool)
    extension_tokens = np.zeros((chains, draws), dtype=np.int64)
    stopped = torch.zeros(chains, dtype=torch.bool, device=position.lengths.device)
    bar = tqdm(total=config.num_stages, desc="blocks (published chain)", disable=not progress, leave=False)
    for stage in range(config.num_stages):
        stage_streams = streams.split(stage)
        active = (~stopped).nonzero().squeeze(-1)
        if active.numel() == 0:
            break
        sub = gather_chains(position, active)
        budget = torch.where(sub.ended, torch.zeros_like(sub.lengths),
                             (sub.lengths + block).clamp(max=config.max_new_tokens) - sub.lengths)
        source = stage_streams.split("extend").split(TOKENS).gather(active)
        continuation = sample_continuations(proposer, sub.contexts(sub.lengths), budget, rule, source)
        extended = complete_extension(proposer, rule, sub, continuation, lm)
        if steps:
            extension_tokens[active.cpu().numpy(), stage * steps] = (extended.lengths - sub.lengths).cpu().numpy()
            state = kernel.init(extended)
            for step in range(steps):
                state, info = kernel.step(stage_streams.split(step).gather(active), state)
                cells = active.cpu().numpy()
                recorder.record(cells, stage * steps + step, state, info)
                active_cells[cells, stage * steps + step] = True
            extended = state.position
        position = scatter_chains(position, active, extended)
        stopped = stopped | position.ended
        bar.update(1)
    bar.close()
    stage_of_draw = np.repeat(np.arange(config.num_stages), steps)[None].repeat(chains, 0)
    trace = recorder.trace(stage=stage_of_draw, extension_tokens=extension_tokens, active=active_cells)
    if trace is not None:
        _stay_put(trace, active_cells)
    return position, trace


def _stay_put(trace, active: np.ndarray) -> None:
    """A stopped chain stays where it is: its samples carry the last value forward, and its
    `accepted` is NaN (no step was taken), so `Trace.acceptance_rate` counts real steps only."""
    for values in trace.samples.values():
        for draw in range(1, values.shape[1]):
            values[:, draw] = np.where(active[:, draw], values[:, draw], values[:, draw - 1])
    trace.stats["accepted"] = np.where(active, trace.stats["accepted"].astype(np.float64), np.nan)


__all__ = ["AnyLengthPowerTarget", "CurrentLengthSuffix", "PUBLISHED_TOP_K", "published_chain"]
