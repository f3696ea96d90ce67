"""Power-SMC (after Azizi et al., METHOD §7): sequential Monte Carlo for p^alpha on S_n.

P particles per prompt are grown token by token from a proposal LM q (default: the base model
at temperature tau = 1/alpha, full support).  Intermediate targets, on S_t (sequences that
ended with EOS within t tokens, or unfinished prefixes of exactly t tokens):

    gamma_t(x) = p(x)^{a_t}            a_t = alpha                         (no ramp)
                                       a_t = 1 + (alpha - 1) min(t, R) / R  (exponent ramp over R tokens)

so gamma_n = p^alpha on S_n and Z_n = sum_{x in S_n} p(x)^alpha.  The incremental weight of a
particle at step t is gamma_t / (gamma_{t-1} q):

* unfinished, appending x_t ~ q(. | x_<t):
      log w_t = a_t log p(x_<=t) - a_{t-1} log p(x_<t) - log q(x_t | x_<t)
              = a_t log p(x_t | x_<t) + (a_t - a_{t-1}) log p(x_<t) - log q(x_t | x_<t)
  Without a ramp and with q = p at tau = 1/alpha this is `log sum_v p(v | x_<t)^alpha`, the log
  local normaliser: it does not depend on the drawn token.
* finished (EOS already emitted; the particle stays put):  log w_t = (a_t - a_{t-1}) log p(x),
  zero without a ramp.  Finished particles keep their weight and stop extending.

Resampling is triggered per prompt when the ESS `1 / sum W^2` falls below `ess_threshold * P`
(never at the last step), with any scheme of `mcmc_llm.smc.resampling`.  The estimate

    Z_hat = prod_t ( sum_i W_{t-1}^i w_t^i )    (W: normalised weights after the last resampling)

is unbiased for Z_n for every P and every unbiased scheme; `log_normalizer` is `log Z_hat`.
The weighted particles (X^i, W^i) estimate pi_alpha: expectations are ratio estimates (bias
O(1/P)); `E[Z_hat sum_i W^i f(X^i)] = sum_x p(x)^alpha f(x)` holds exactly.

Rejuvenation (optional): `rejuvenation_steps` MH steps with the kernel
`MetropolisHastings(PowerTarget(a_t, t), SuffixResampling(cut rule, cap t))`, which leaves gamma_t
on S_t invariant.  Invariance alone does not make a move harmless to the estimates: for a weighted
system, E[K h(X) | past] = Kh(X) != h(X), so a move is exact only when the decision to make it does
not depend on the particles.  Resampling is different: it is conditionally unbiased given the past,
so ESS-triggered resampling is exact.

* `rejuvenate="end"`: once, after a final resampling on S_n (the returned particles are then
  equally weighted); Z_hat is computed before and is unaffected.  Exact.
* `rejuvenate="resampling"`: the steps at which prompt b is resampled and moved are fixed before
  the run by a *pilot*: an independent run of the same config without rejuvenation (its own
  generator, seeded from a draw of `generator`); its `diagnostics["resampled"]` is the schedule
  (`diagnostics["scheduled_moves"]`).  At a scheduled step t < n, prompt b's particles are
  resampled whatever their ESS and then ALL of them are moved (a prompt whose weights are all zero
  skips it); elsewhere ESS-triggered resampling goes on without moves; then the final move as for
  "end".  A fixed schedule inserts gamma_t-invariant kernels into a fixed Feynman-Kac model, which
  keeps Z_hat and E[Z_hat sum_i W^i f(X^i)] exact.  The loop does not stop when every particle has
  finished while a move is still scheduled (a move on S_{t+1} can revive a finished particle as an
  unfinished prefix; skipping it because the particles finished would be particle-dependent).
  The pilot's tokens count in `compute`: it roughly doubles the generation cost.
  The adaptive rule -- move the prompts whose own ESS fell below the threshold -- is biased (on a
  random trigram, P = 2, threshold 1, multinomial: mean Z_hat / Z = 0.72, tests/smc/test_smc_unbiased.py);
  it is reachable only through the private `power_smc(..., _adaptive_moves=True)`, for that test.

The LM states of moved particles are rebuilt with `lm.start`.

LM use: `lm.start` once for all prompts x particles, `lm.advance` once per token for unfinished
particles, `lm.select_rows(state, ancestors)` on resampling (rows repeat; on the HF backend this
copies KV-cache rows instead of re-encoding), finished rows dropped from the state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch

from mcmc_llm.core.deprecation import deprecated_name
from mcmc_llm.core.random import categorical, make_generator
from mcmc_llm.core.trace import Trace
from mcmc_llm.core.validate import integer, number
from mcmc_llm.lm.prompts import register_prompts
from mcmc_llm.lm.sampling import TemperedProposal, is_eos, token_statistics
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch, spent
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.proposals.cut_rules import resolve_cut_rule
from mcmc_llm.smc.particles import (
    Decoder, contexts_of, distinct_per_prompt, rejuvenate, repeat_rows, take_rows,
)
from mcmc_llm.smc.resampling import effective_sample_size, get_resampler

REJUVENATION_POINTS = ("end", "resampling")


@dataclasses.dataclass(frozen=True)
class SMCConfig(TemperedProposal):
    """Settings of Power-SMC.

    ess_threshold: resample a prompt's particles when ESS < ess_threshold * P (0: never, 1: at
        every step where the weights are not all equal).
    proposal_temperature: None means 1/alpha.  The proposal always has full support.
    ramp_tokens: R; 0 means the exponent is alpha from the first token.
    rejuvenation_steps / rejuvenation_cut_rule / rejuvenate: MH moves (a cut rule name from CUT_RULES
        or a CutRule object; `rejuvenation_kernel` is the cut rule's old name, still accepted)
        at the end only ("end"), or also, resampling first, at the steps where an independent pilot
        run without moves resampled ("resampling": a schedule fixed in advance; module docstring).
    """

    alpha: float = 4.0
    max_new_tokens: int = 3072
    num_particles: int = 16
    resampling: str = "systematic"
    ess_threshold: float = 0.5
    proposal_temperature: float | None = None
    ramp_tokens: int = 0
    rejuvenation_steps: int = 0
    rejuvenation_cut_rule: Any = "uniform"
    rejuvenate: str = "end"
    rejuvenation_kernel: dataclasses.InitVar[str | None] = None  # the old name of `rejuvenation_cut_rule`

    def __post_init__(self, rejuvenation_kernel):
        if rejuvenation_kernel is not None:
            if self.rejuvenation_cut_rule not in ("uniform", rejuvenation_kernel):
                raise ValueError(f"got rejuvenation_cut_rule={self.rejuvenation_cut_rule!r} and its old name "
                                 f"rejuvenation_kernel={rejuvenation_kernel!r}; give one")
            deprecated_name("SMCConfig(rejuvenation_kernel=...)", "rejuvenation_cut_rule=", stacklevel=4)
            object.__setattr__(self, "rejuvenation_cut_rule", rejuvenation_kernel)
        number("alpha", self.alpha, 0, strict=True)  # finite: Power-SMC targets p^alpha with alpha < inf
        for name, minimum in (("max_new_tokens", 1), ("num_particles", 1), ("ramp_tokens", 0), ("rejuvenation_steps", 0)):
            object.__setattr__(self, name, integer(name, getattr(self, name), minimum))
        if not (isinstance(self.ess_threshold, (int, float)) and 0 <= self.ess_threshold <= 1):
            raise ValueError(f"ess_threshold must be a fraction in [0, 1], got {self.ess_threshold!r}")
        if self.ramp_tokens > self.max_new_tokens:
            raise ValueError(f"ramp_tokens {self.ramp_tokens} exceeds max_new_tokens {self.max_new_tokens}")
        get_resampler(self.resampling)
        resolve_cut_rule(self.rejuvenation_cut_rule)  # a registry name or a CutRule object
        if self.rejuvenate not in REJUVENATION_POINTS:
            raise ValueError(f"rejuvenate must be one of {', '.join(REJUVENATION_POINTS)}, got {self.rejuvenate!r}")
        if not self.sampling_rule().full_support:
            raise ValueError("the SMC proposal needs full support: proposal_temperature must be > 0")

    def exponent(self, tokens: int) -> float:
        """a_t after t generated tokens: alpha, or the linear ramp from 1 to alpha over R tokens."""
        if self.ramp_tokens == 0:
            return float(self.alpha)
        return 1.0 + (self.alpha - 1.0) * min(tokens, self.ramp_tokens) / self.ramp_tokens


@dataclasses.dataclass
class SMCResult:
    """Weighted particles of B prompts (prompt b's particles are rows b*P .. b*P + P - 1).

    log_weights: [B, P], normalised (logsumexp over particles is 0).
    log_normalizer: [B], log Z_hat (Z = sum_{x in S_n} p(x)^alpha).
    diagnostics: per step [B, n]: `ess` (before resampling; NaN after the run stopped), `resampled`,
        `unique_ancestors` (distinct ancestors after the step), `alive` (unfinished particles
        after the step's resampling: those extended at the next step), `log_normalizer` (running
        log Z_hat), `rejuvenation_acceptance` (NaN where no move), `scheduled_moves` (the pilot's
        schedule, all False unless rejuvenate="resampling"); and [B]:
        `distinct_final` (distinct final sequences), `final_ess`.
    rejuvenation: the trace of the final MH rejuvenation (None without one).
    Row order is not random (resampling returns sorted ancestors): pick particles with `draw`.
    A prompt whose particles all have weight zero (possible only with a separate proposal LM that
    puts mass where p has none) has log_normalizer -inf (Z_hat = 0) and weights -inf.
    compute: the proposal LM's counter deltas (plus `reference_*` when a separate proposal LM is used).
    """

    particles: SequenceBatch
    log_weights: torch.Tensor
    log_normalizer: torch.Tensor
    num_particles: int
    diagnostics: dict[str, np.ndarray]
    rejuvenation: Trace | None
    compute: dict[str, int]

    @property
    def num_prompts(self) -> int:
        return self.log_weights.shape[0]

    def weights(self) -> torch.Tensor:
        return torch.exp(self.log_weights)

    def sequences(self, prompt_index: int) -> list[list[int]]:
        rows = slice(prompt_index * self.num_particles, (prompt_index + 1) * self.num_particles)
        return TokenBatch(self.particles.tokens[rows], self.particles.lengths[rows]).to_lists()

    def weighted_law(self, prompt_index: int) -> dict[tuple[int, ...], float]:
        """`{sequence: total normalised weight}` of one prompt's particles."""
        law: dict[tuple[int, ...], float] = {}
        for sequence, weight in zip(self.sequences(prompt_index), self.weights()[prompt_index].tolist()):
            law[tuple(sequence)] = law.get(tuple(sequence), 0.0) + weight
        return law

    def draw_indices(self, generator: torch.Generator, num: int = 1) -> torch.Tensor:
        """Sampling-importance-resampling: `num` iid particle rows per prompt from the weights, [B, num]."""
        weights = self.weights()
        cumulative = torch.cumsum(weights, -1)
        points = torch.rand(weights.shape[0], num, generator=generator, dtype=torch.float64, device=generator.device)
        local = torch.searchsorted(cumulative, points.to(weights.device) * cumulative[:, -1:], right=True)
        local = local.clamp(max=self.num_particles - 1)
        return local + torch.arange(weights.shape[0], device=weights.device)[:, None] * self.num_particles

    def draw(self, generator: torch.Generator, num: int = 1) -> SequenceBatch:
        """`num` SIR draws per prompt (rows b*num .. b*num + num - 1): only asymptotically exact (bias O(1/P))."""
        return take_rows(self.particles, self.draw_indices(generator, num).reshape(-1))


def power_smc(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    config: SMCConfig,
    *,
    seed: int = 0,
    generator: torch.Generator | None = None,
    proposal_lm: LanguageModel | None = None,
    _adaptive_moves: bool = False,
) -> SMCResult:
    """Run Power-SMC for every prompt with `config.num_particles` particles, all batched.

    Parameters:
    lm: the base model p of the target p^alpha.
    prompts: B token-id sequences; prompt b's particles are rows b*P .. b*P + P - 1 of the result.
    config: the `SMCConfig` (alpha, cap n, particles P, resampling, ramp, rejuvenation).
    seed / generator: the randomness, `generator` when given, else `make_generator(seed)`.
    proposal_lm: the LM q particles are drawn from (default `lm`) under temperature
        `config.temperature`; the incremental weights divide by q (module docstring).
    _adaptive_moves: private, for the tests only: with `rejuvenate="resampling"`, move the prompts
        whose ESS fell below the threshold in this run instead of following a pilot's schedule
        -- the adaptive rule, which biases Z_hat (module docstring).
    """
    if len(prompts) == 0:
        raise ValueError("power_smc needs at least one prompt, got none")
    proposer = proposal_lm if proposal_lm is not None else lm
    reference = lm if proposer is not lm else None
    generator = generator if generator is not None else make_generator(seed)
    rule, resample = config.sampling_rule(), get_resampler(config.resampling)
    num_prompts, count, cap = len(prompts), config.num_particles, config.max_new_tokens
    total = num_prompts * count
    start_proposal = proposer.counter.snapshot()  # before the pilot: its tokens are part of the cost
    start_reference = reference.counter.snapshot() if reference is not None else None
    intermediate_moves = bool(config.rejuvenation_steps) and config.rejuvenate == "resampling"
    schedule = np.zeros((num_prompts, cap), dtype=bool)
    if intermediate_moves and not _adaptive_moves:
        schedule = _pilot_schedule(lm, prompts, config, generator, proposal_lm)
    register_prompts([proposer], prompts)
    prompt_batch = repeat_rows(TokenBatch.from_lists([list(p) for p in prompts], device=proposer.device), count)
    device = prompt_batch.ids.device
    scheduled = torch.as_tensor(schedule, device=device)

    tokens = torch.zeros(total, cap, dtype=torch.long, device=device)
    stats = {name: torch.zeros(total, cap, dtype=torch.float64, device=device) for name in ("log_p", "log_q", "entropy")}
    lengths = torch.zeros(total, dtype=torch.long, device=device)
    ended = torch.zeros(total, dtype=torch.bool, device=device)
    log_p_total = torch.zeros(total, dtype=torch.float64, device=device)
    log_w = torch.zeros(num_prompts, count, dtype=torch.float64, device=device)
    offsets = torch.arange(num_prompts, device=device)[:, None] * count

    def batch() -> SequenceBatch:
        return SequenceBatch(prompt_batch, tokens, lengths, stats["log_p"], stats["log_q"], stats["entropy"], ended)

    diag = {
        "ess": np.full((num_prompts, cap), np.nan), "resampled": np.zeros((num_prompts, cap), dtype=bool),
        "unique_ancestors": np.full((num_prompts, cap), count, dtype=np.int64),
        "alive": np.zeros((num_prompts, cap), dtype=np.int64), "log_normalizer": np.full((num_prompts, cap), np.nan),
        "rejuvenation_acceptance": np.full((num_prompts, cap), np.nan), "scheduled_moves": schedule.copy(),
    }
    decoder = Decoder(proposer, reference, prompt_batch, torch.arange(total, device=device))
    exponent_now = config.exponent(0)
    for t in range(cap):
        rows = decoder.rows
        exponent_next = config.exponent(t + 1)
        previous_total = log_p_total.clone()
        if rows.numel():  # no unfinished particle (possible while moves are scheduled): only the ramp goes on
            proposal_logprobs, reference_logprobs = decoder.logprobs()
            drawn = categorical(generator, rule.proposal_logprobs(proposal_logprobs))
            step = token_statistics(reference_logprobs, drawn, rule)
            if reference is not None:
                step["log_q"] = token_statistics(proposal_logprobs, drawn, rule)["log_q"]
            proposer.counter.tokens_sampled += int(rows.numel())
            tokens[rows, t] = drawn
            for name, value in step.items():
                stats[name][rows, t] = value
            lengths[rows] = t + 1
            ended[rows] = is_eos(drawn, proposer.eos_token_ids)
            log_p_total[rows] += step["log_p"]
        increment = exponent_next * log_p_total - exponent_now * previous_total
        if rows.numel():
            increment[rows] -= step["log_q"]
        increment = torch.where(torch.isneginf(previous_total), torch.zeros_like(increment), increment)
        log_w += increment.reshape(num_prompts, count)
        exponent_now = exponent_next

        finished = ended | (lengths >= cap)
        ess = effective_sample_size(log_w)
        diag["ess"][:, t] = ess.cpu().numpy()
        # Stop early once every particle has finished -- unless a move is scheduled now or later:
        # skipping it because the particles finished would be a particle-dependent decision.
        last_step = t + 1 == cap or (bool(finished.all()) and not schedule[:, t:cap - 1].any())
        ancestors = torch.arange(total, device=device)
        positive = torch.isfinite(log_w).any(-1)
        resampling = ((ess < config.ess_threshold * count) | scheduled[:, t]) & positive
        moving = (resampling if _adaptive_moves else scheduled[:, t] & positive) & intermediate_moves
        rejuvenated = False
        if not last_step and bool(resampling.any()):
            local = resample(generator, log_w[resampling])
            grid = ancestors.reshape(num_prompts, count).clone()
            grid[resampling] = local + offsets[resampling]
            ancestors = grid.reshape(-1)
            diag["resampled"][:, t] = resampling.cpu().numpy()
            ordered = grid.sort(-1).values
            diag["unique_ancestors"][:, t] = (1 + (ordered.diff(dim=-1) != 0).sum(-1)).cpu().numpy()
            level = torch.logsumexp(log_w[resampling], -1, keepdim=True) - math.log(count)
            log_w[resampling] = level.expand(-1, count)
            tokens, lengths, ended, log_p_total = tokens[ancestors], lengths[ancestors], ended[ancestors], log_p_total[ancestors]
            stats = {name: value[ancestors] for name, value in stats.items()}
            finished = finished[ancestors]
            if bool(moving.any()):  # every particle of a moved prompt, resampled just now (equal weights)
                moved_rows = torch.arange(total, device=device).reshape(num_prompts, count)[moving].reshape(-1)
                moved, trace = rejuvenate(take_rows(batch(), moved_rows), config, exponent_now, t + 1, proposer, lm, rule, generator)
                tokens, lengths, ended = tokens.clone(), lengths.clone(), ended.clone()
                tokens[moved_rows], lengths[moved_rows], ended[moved_rows] = moved.tokens, moved.lengths, moved.ended
                for name in stats:
                    stats[name][moved_rows] = getattr(moved, name)
                log_p_total[moved_rows] = moved.total_log_p()
                finished = ended | (lengths >= cap)
                rate = trace.stats["accepted"].reshape(-1, count * config.rejuvenation_steps).mean(axis=1)
                diag["rejuvenation_acceptance"][moving.cpu().numpy(), t] = rate
                rejuvenated = True
        diag["log_normalizer"][:, t] = (torch.logsumexp(log_w, -1) - math.log(count)).cpu().numpy()
        diag["alive"][:, t] = (~finished).reshape(num_prompts, count).sum(-1).cpu().numpy()
        if last_step:
            break
        keep = (~finished).nonzero().squeeze(-1)
        if rejuvenated:  # moves may have revived finished particles: rebuild the LM states
            decoder.restart(contexts_of(batch(), keep), keep)
            continue
        position_of = torch.full((total,), -1, dtype=torch.long, device=device)
        position_of[rows] = torch.arange(rows.numel(), device=device)
        state_rows = position_of[ancestors[keep]]
        decoder.select_and_advance(state_rows, tokens[keep, t], keep)

    # A ramp that had not finished when every particle ended: bring the exponent to alpha.
    if exponent_now != config.alpha:
        log_w += torch.nan_to_num((config.alpha - exponent_now) * log_p_total, nan=0.0).reshape(num_prompts, count)
    log_normalizer = torch.logsumexp(log_w, -1) - math.log(count)
    particles = batch()
    normalised = log_w - torch.logsumexp(log_w, -1, keepdim=True)
    normalised = torch.where(torch.isneginf(log_normalizer)[:, None], torch.full_like(log_w, -math.inf), normalised)
    diag["final_ess"] = effective_sample_size(log_w).cpu().numpy()
    trace = None
    if config.rejuvenation_steps:
        if bool(torch.isneginf(log_normalizer).any()):
            raise ValueError("rejuvenation needs at least one particle of positive weight for every prompt")
        local = resample(generator, normalised)
        particles = take_rows(particles, (local + offsets).reshape(-1))
        particles, trace = rejuvenate(particles, config, config.alpha, cap, proposer, lm, rule, generator)
        normalised = torch.full_like(normalised, -math.log(count))
    diag["distinct_final"] = distinct_per_prompt(particles, num_prompts, count)
    compute = spent(start_proposal, proposer.counter.snapshot())
    if reference is not None:
        compute.update(spent(start_reference, reference.counter.snapshot(), "reference_"))
    return SMCResult(particles, normalised, log_normalizer, count, diag, trace, compute)


def _pilot_schedule(lm, prompts, config: SMCConfig, generator: torch.Generator, proposal_lm) -> np.ndarray:
    """The steps [B, n] at which `rejuvenate="resampling"` resamples and moves each prompt's particles:
    where an independent pilot run (same config, no rejuvenation, its own generator seeded from
    `generator`) resampled.  Fixed before the main run, so the moves do not depend on its particles."""
    pilot_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    pilot_generator = torch.Generator(device=generator.device).manual_seed(pilot_seed)
    pilot = power_smc(lm, prompts, dataclasses.replace(config, rejuvenation_steps=0), generator=pilot_generator,
                      proposal_lm=proposal_lm)
    schedule = pilot.diagnostics["resampled"].copy()
    schedule[:, -1] = False  # never at the last step (the final move is the "end" one)
    return schedule
