"""Particle bookkeeping for Power-SMC (`mcmc_llm.smc.power_smc`).

* `repeat_rows`, `take_rows`, `contexts_of`: gather rows of token / sequence batches.
* `distinct_per_prompt`: distinct sequences among each prompt's particles.
* `Decoder`: the LM states of the unfinished particles (proposal LM and, if different, reference
  LM), advanced one token per step, reordered on resampling, rebuilt after MH moves; it holds no
  state (and calls no LM) while no particle is unfinished.
* `rejuvenate`: MH moves `MetropolisHastings(PowerTarget(a, cap), SuffixResampling(...))`.
"""

from __future__ import annotations

import torch

from mcmc_llm.drivers.chains import run_chains
from mcmc_llm.kernels.mh import MetropolisHastings
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.cut_rules import resolve_cut_rule
from mcmc_llm.proposals.suffix import SuffixResampling
from mcmc_llm.targets.sequence import PowerTarget


def repeat_rows(batch: TokenBatch, times: int) -> TokenBatch:
    """Each row `times` times in a row (rows b*times .. b*times + times - 1 are copies of row b)."""
    return TokenBatch(batch.ids.repeat_interleave(times, 0), batch.lengths.repeat_interleave(times, 0))


def take_rows(batch: SequenceBatch, rows: torch.Tensor) -> SequenceBatch:
    return SequenceBatch(
        prompts=TokenBatch(batch.prompts.ids[rows], batch.prompts.lengths[rows]),
        tokens=batch.tokens[rows], lengths=batch.lengths[rows], log_p=batch.log_p[rows],
        log_q=batch.log_q[rows], entropy=batch.entropy[rows], ended=batch.ended[rows], log_q_law=batch.log_q_law[rows],
    )


def contexts_of(batch: SequenceBatch, rows: torch.Tensor) -> TokenBatch:
    """Prompt + generated tokens of the given particle rows."""
    return take_rows(batch, rows).contexts(batch.lengths[rows])


def distinct_per_prompt(batch: SequenceBatch, prompts: int, particles: int):
    """Number of distinct sequences among each prompt's particles (two 31-bit polynomial hashes), numpy [B]."""
    modulus = (1 << 31) - 1
    positions = torch.arange(batch.capacity, device=batch.tokens.device)[None]
    symbols = torch.where(positions < batch.lengths[:, None], batch.tokens + 1, 0)
    key = torch.zeros(batch.num_chains, dtype=torch.long, device=batch.tokens.device)
    for multiplier in (1_000_003, 998_244_353):
        value = torch.zeros_like(key)
        for column in range(batch.capacity):
            value = (value * multiplier + symbols[:, column]) % modulus
        key = key * modulus + value
    ordered = key.reshape(prompts, particles).sort(-1).values
    return (1 + (ordered.diff(dim=-1) != 0).sum(-1)).cpu().numpy()


class Decoder:
    """The LM states of the unfinished particles: the proposal LM's and, if different, the
    reference model's; `rows[k]` is the particle held by state row k.  With no unfinished
    particle (`rows` empty) there is no state and no LM is called."""

    def __init__(self, proposer: LanguageModel, reference: LanguageModel | None, contexts: TokenBatch, rows: torch.Tensor):
        self.proposer, self.reference = proposer, reference
        self.restart(contexts, rows)

    def logprobs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(proposal LM, reference LM) next-token log-probs [A, V], float64 (A > 0 rows)."""
        proposal = self.states[0].logprobs.to(torch.float64)
        return proposal, self.states[-1].logprobs.to(torch.float64)

    def _models(self):
        return [self.proposer] + ([self.reference] if self.reference is not None else [])

    def select_and_advance(self, state_rows: torch.Tensor, tokens: torch.Tensor, particle_rows: torch.Tensor) -> None:
        if particle_rows.numel() == 0:
            self.states, self.rows = [], particle_rows
            return
        identity = state_rows.numel() == self.rows.numel() and bool(
            (state_rows == torch.arange(self.rows.numel(), device=state_rows.device)).all())
        states = self.states if identity else [lm.select_rows(s, state_rows) for lm, s in zip(self._models(), self.states)]
        self.states = [lm.advance(s, tokens) for lm, s in zip(self._models(), states)]
        self.rows = particle_rows

    def restart(self, contexts: TokenBatch, particle_rows: torch.Tensor) -> None:
        self.states = [lm.start(contexts) for lm in self._models()] if particle_rows.numel() else []
        self.rows = particle_rows


def rejuvenate(particles, config, exponent, cap, proposer, lm, rule, generator):
    """`config.rejuvenation_steps` MH steps targeting p^exponent on S_cap; returns (particles, trace)."""
    target = PowerTarget(exponent, cap)
    proposal = SuffixResampling(proposer, rule, resolve_cut_rule(config.rejuvenation_cut_rule), cap, reference_lm=lm)
    kernel = MetropolisHastings(target, proposal)
    trace = run_chains(kernel, particles, config.rejuvenation_steps, generator=generator,
                       functionals={"log_p": lambda batch: batch.total_log_p()}, description="rejuvenation")
    return trace.final_state.position, trace


__all__ = ["Decoder", "contexts_of", "distinct_per_prompt", "rejuvenate", "repeat_rows", "take_rows"]
