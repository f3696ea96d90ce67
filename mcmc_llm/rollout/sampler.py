"""The rollout sampler (after Ji et al., "scalable power sampling", METHOD §7): no MCMC.

The exact conditionals of pi_alpha ∝ p^alpha on S_n are

    pi_alpha(v | h) ∝ p(v | h)^alpha zeta(h v),      zeta(h v) = sum_{x_>t} p(x_>t | h v)^alpha,

the sum running over the completions of `h v` in S_n (zeta = 1 when v is EOS or `h v` reaches the
cap).  With completions drawn from a proposal q (default p at tau = 1/alpha, full support),

    zeta(h v) = E_{x_>t ~ q}[ p(x_>t | h v)^alpha / q(x_>t | h v) ],

so M rollouts `y_1..y_M` to EOS or the cap give the unbiased estimate `zeta_hat = mean_j w_j`,
`log w_j = sum_s alpha log p(y_js) - log q(y_js)` (with q = p^alpha / local normaliser, w_j is
the product of the local normalisers along y_j).  At each position the sampler

1. takes the top-K next tokens by base p (K = `top_candidates`),
2. estimates zeta for each with M rollouts (`rollouts`),
3. draws the next token from `p(v|h)^alpha zeta_hat(h v)` normalised over the top-K.

It is biased in two ways, both measured in docs/smc.md:
* the top-K restriction drops the other tokens (exact only when K covers every token of positive p);
* `pi_hat(v) = p^alpha zeta_hat(v) / sum_u p^alpha zeta_hat(u)` is a ratio of unbiased estimates,
  so E[pi_hat] != pi_alpha at finite M (bias O(1/M); exact as M -> inf).
With `jackknife=True` the ratio's O(1/M) bias is removed by the jackknife over rollout index j
(rollout j of every candidate left out together):
`pi_JK = M pi_hat - (M - 1) mean_j pi_hat^{(-j)}`, clipped at 0 and renormalised (the clipping
re-introduces a small bias; the number of clipped rows is reported).
`horizon` (optional) stops rollouts after H tokens, a further (truncation) bias.

Rollouts go through `sample_continuations` (the one generation path) from the context
`prompt + h + v`, so each rollout re-encodes its context (on the HF backend, registered prompts
are served from the prefix cache).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch

from mcmc_llm.core.random import categorical, make_generator
from mcmc_llm.core.validate import integer, optional_integer, number
from mcmc_llm.lm.generation import sample_continuations, score_continuations
from mcmc_llm.lm.prompts import register_prompts
from mcmc_llm.lm.sampling import TemperedProposal, is_eos
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch, spent
from mcmc_llm.lm.sequences import SequenceBatch


@dataclasses.dataclass(frozen=True)
class RolloutConfig(TemperedProposal):
    """Settings of the rollout sampler.

    top_candidates: K, candidates per position (by base p); K >= V means every token.
    rollouts: M, rollouts per candidate.
    proposal_temperature: temperature of the rollout proposal (None: 1/alpha).
    jackknife: jackknife bias correction of the next-token probabilities (needs M >= 2).
    horizon: None (rollouts run to EOS or the cap) or H >= 1 tokens per rollout.
    """

    alpha: float = 4.0
    max_new_tokens: int = 3072
    top_candidates: int = 8
    rollouts: int = 4
    proposal_temperature: float | None = None
    jackknife: bool = True
    horizon: int | None = None

    def __post_init__(self):
        number("alpha", self.alpha, 0, strict=True)
        for name in ("max_new_tokens", "top_candidates", "rollouts"):
            object.__setattr__(self, name, integer(name, getattr(self, name)))
        object.__setattr__(self, "horizon", optional_integer("horizon", self.horizon))
        if not self.sampling_rule().full_support:
            raise ValueError("the rollout proposal needs full support: proposal_temperature must be > 0")



@dataclasses.dataclass
class RolloutResult:
    """One sequence per row (prompt b's draws are rows b*S .. b*S + S - 1).

    final.log_q holds the probability with which the sampler actually drew each token.
    diagnostics: per step [rows, n] (NaN once a row has ended): `candidates`, `tempered_mass_covered`
        (sum over the top-K of p^alpha / sum over all tokens), `chosen_prob`, `zeta_relative_se`
        (mean over candidates of the estimated relative standard error of zeta_hat),
        `jackknife_clipped` (1 if the jackknife produced a negative probability that was clipped);
        scalars `rollout_tokens`, `candidate_tokens`.
    compute: counter deltas of `lm` (plus `proposal_*` when a separate proposal LM is used).
    """

    final: SequenceBatch
    samples_per_prompt: int
    diagnostics: dict[str, np.ndarray | int]
    compute: dict[str, int]

    def sequences(self) -> list[list[int]]:
        return self.final.to_lists()


def _rollout_log_weights(lm, proposer, rule, config, contexts: TokenBatch, budget: torch.Tensor, generator):
    """log w_j = sum_s alpha log p(y_s) - log q(y_s) of one rollout per context; and tokens sampled."""
    continuation = sample_continuations(proposer, contexts, budget, rule, generator)
    log_p = continuation.log_p
    if proposer is not lm:
        log_p = score_continuations(lm, contexts, continuation.tokens, rule).log_p.to(log_p)
    positions = torch.arange(log_p.shape[1], device=log_p.device)[None]
    inside = positions < continuation.tokens.lengths[:, None]
    terms = torch.where(inside, config.alpha * log_p - continuation.log_q, torch.zeros_like(log_p))
    return terms.sum(-1), int(continuation.tokens.lengths.sum())


def _jackknife(log_p_alpha: torch.Tensor, log_w: torch.Tensor, probs: torch.Tensor):
    """Jackknifed next-token probabilities from per-rollout log weights log_w [A, K, M]."""
    count = log_w.shape[-1]
    top = log_w.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    scaled = torch.exp(log_w - top)
    leave_out = (scaled.sum(-1, keepdim=True) - scaled).clamp(min=torch.finfo(torch.float64).tiny)
    log_zeta_loo = torch.log(leave_out) + top - math.log(count - 1)  # [A, K, M]
    scores = log_p_alpha[..., None] + log_zeta_loo
    loo_probs = torch.softmax(scores, dim=1)  # over candidates, for each left-out j
    corrected = count * probs - (count - 1) * loo_probs.mean(-1)
    clipped = (corrected < -1e-12).any(-1)
    corrected = corrected.clamp(min=0.0)
    corrected = torch.where(torch.isfinite(log_p_alpha), corrected, torch.zeros_like(corrected))
    return corrected / corrected.sum(-1, keepdim=True), clipped


def rollout_next_token_probs(
    lm: LanguageModel,
    position: SequenceBatch,
    config: RolloutConfig,
    generator: torch.Generator,
    *,
    base_logprobs: torch.Tensor | None = None,
    proposal_lm: LanguageModel | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | int]]:
    """The sampler's next-token probabilities [A, V] for the A rows of `position` (unfinished,
    below the cap); zero outside the top-K.  `base_logprobs` [A, V] = log p(. | prompt, x) if the
    caller has them (else one `lm.start` computes them).  One call = one draw of the random
    estimate pi_hat; its mean over calls is what the sampler's conditional law is."""
    proposer = proposal_lm if proposal_lm is not None else lm
    if base_logprobs is None:
        base_logprobs = lm.start(position.contexts(position.lengths)).logprobs
    rule, cap, count = config.sampling_rule(), config.max_new_tokens, config.rollouts
    base_logprobs = base_logprobs.to(torch.float64)
    rows, vocab = base_logprobs.shape
    k = min(config.top_candidates, vocab)
    values, candidates = torch.topk(base_logprobs, k, dim=-1)
    valid = torch.isfinite(values)
    remaining = cap - position.lengths - 1  # tokens left after the candidate
    needs_future = valid & ~is_eos(candidates, lm.eos_token_ids) & (remaining[:, None] > 0)
    log_w = torch.zeros(rows, k, count, dtype=torch.float64, device=base_logprobs.device)
    log_w.masked_fill_(~valid[..., None], -math.inf)
    pairs = needs_future.nonzero()
    rollout_tokens = 0
    if pairs.numel():
        row_of, cand_of = pairs[:, 0], pairs[:, 1]
        prefix = position.contexts(position.lengths)
        prefix = TokenBatch(prefix.ids[row_of], prefix.lengths[row_of])
        step = TokenBatch(candidates[row_of, cand_of][:, None], torch.ones_like(row_of))
        contexts = prefix.concat(step)
        repeated = TokenBatch(contexts.ids.repeat_interleave(count, 0), contexts.lengths.repeat_interleave(count, 0))
        budget = remaining[row_of]
        if config.horizon is not None:
            budget = budget.clamp(max=config.horizon)
        weights, rollout_tokens = _rollout_log_weights(
            lm, proposer, rule, config, repeated, budget.repeat_interleave(count, 0), generator
        )
        log_w[row_of, cand_of] = weights.reshape(-1, count)
    log_p_alpha = torch.where(valid, config.alpha * values, -math.inf)
    log_zeta = torch.logsumexp(log_w, -1) - math.log(count)
    probs = torch.softmax(log_p_alpha + log_zeta, dim=-1)
    clipped = torch.zeros(rows, dtype=torch.bool, device=probs.device)
    if config.jackknife and count >= 2 and pairs.numel():
        probs, clipped = _jackknife(log_p_alpha, log_w, probs)
    full = torch.zeros(rows, vocab, dtype=torch.float64, device=probs.device).scatter_(1, candidates, probs)
    if count >= 2:
        scaled = torch.exp(log_w - log_zeta[..., None])
        spread = torch.where(needs_future, scaled.std(-1) / math.sqrt(count), torch.zeros_like(log_zeta))
        relative_se = spread.sum(-1) / needs_future.sum(-1).clamp(min=1)
    else:
        relative_se = torch.full((rows,), math.nan, dtype=torch.float64, device=probs.device)
    covered = torch.logsumexp(log_p_alpha, -1) - torch.logsumexp(config.alpha * base_logprobs, -1)
    info = {
        "candidates": valid.sum(-1),
        "tempered_mass_covered": torch.exp(covered),
        "zeta_relative_se": relative_se,
        "jackknife_clipped": clipped,
        "rollout_tokens": rollout_tokens,
        "candidate_tokens": int(pairs.shape[0]) * count,
    }
    return full, info


def rollout_sample(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    config: RolloutConfig,
    *,
    samples_per_prompt: int = 1,
    seed: int = 0,
    generator: torch.Generator | None = None,
    proposal_lm: LanguageModel | None = None,
) -> RolloutResult:
    """Draw `samples_per_prompt` independent sequences per prompt with the rollout sampler, batched.

    Parameters:
    lm: the base model p of the target p^alpha (candidates, their probabilities, the rollouts' log p).
    prompts: B token-id sequences; prompt b's draws are rows b*S .. b*S + S - 1 of `final`.
    config: the `RolloutConfig` (alpha, cap n, K candidates, M rollouts, jackknife, horizon).
    samples_per_prompt: S independent draws per prompt.
    seed / generator: the randomness, `generator` when given, else `make_generator(seed)`.
    proposal_lm: the LM q that draws the rollouts (default `lm`), under `config.sampling_rule()`;
        their weights `p^alpha / q` use `lm`'s log p.
    """
    if len(prompts) == 0:
        raise ValueError("rollout_sample needs at least one prompt, got none")
    samples_per_prompt = integer("samples_per_prompt", samples_per_prompt)
    generator = generator if generator is not None else make_generator(seed)
    proposer = proposal_lm if proposal_lm is not None else lm
    register_prompts([lm, proposer], prompts)
    repeated = [list(prompt) for prompt in prompts for _ in range(samples_per_prompt)]  # prompt b: rows b*S .. b*S + S - 1
    prompt_batch = TokenBatch.from_lists(repeated, device=lm.device)
    total, cap = len(prompt_batch), config.max_new_tokens
    device = prompt_batch.ids.device
    before = lm.counter.snapshot()
    before_proposal = proposer.counter.snapshot() if proposer is not lm else None
    tokens = torch.zeros(total, cap, dtype=torch.long, device=device)
    stats = {name: torch.zeros(total, cap, dtype=torch.float64, device=device) for name in ("log_p", "log_q", "entropy")}
    lengths = torch.zeros(total, dtype=torch.long, device=device)
    ended = torch.zeros(total, dtype=torch.bool, device=device)
    names = ("candidates", "tempered_mass_covered", "chosen_prob", "zeta_relative_se", "jackknife_clipped")
    diag: dict = {name: np.full((total, cap), np.nan) for name in names}
    diag["rollout_tokens"], diag["candidate_tokens"] = 0, 0
    state = lm.start(prompt_batch)
    rows = torch.arange(total, device=device)
    for t in range(cap):
        base = state.logprobs.to(torch.float64)
        position = SequenceBatch(
            TokenBatch(prompt_batch.ids[rows], prompt_batch.lengths[rows]), tokens[rows], lengths[rows],
            stats["log_p"][rows], stats["log_q"][rows], stats["entropy"][rows], ended[rows],
        )
        probs, info = rollout_next_token_probs(lm, position, config, generator, base_logprobs=base, proposal_lm=proposal_lm)
        drawn = categorical(generator, torch.log(probs))
        lm.counter.tokens_sampled += int(rows.numel())
        tokens[rows, t] = drawn
        stats["log_p"][rows, t] = base.gather(1, drawn[:, None]).squeeze(1)
        stats["log_q"][rows, t] = torch.log(probs.gather(1, drawn[:, None]).squeeze(1))
        stats["entropy"][rows, t] = -(torch.exp(base) * torch.nan_to_num(base, neginf=0.0)).sum(-1)
        lengths[rows] = t + 1
        stop = is_eos(drawn, lm.eos_token_ids)
        ended[rows] = stop
        info["chosen_prob"] = probs.gather(1, drawn[:, None]).squeeze(1)
        for name in names:
            diag[name][rows.cpu().numpy(), t] = info[name].to(torch.float64).cpu().numpy()
        diag["rollout_tokens"] += info["rollout_tokens"]
        diag["candidate_tokens"] += info["candidate_tokens"]
        keep = (~stop).nonzero().squeeze(-1)
        if t + 1 == cap or keep.numel() == 0:
            break
        if keep.numel() < rows.numel():
            state = lm.select_rows(state, keep)
        rows = rows[keep]
        state = lm.advance(state, drawn[keep])
    final = SequenceBatch(prompt_batch, tokens, lengths, stats["log_p"], stats["log_q"], stats["entropy"], ended)
    compute = spent(before, lm.counter.snapshot())
    if before_proposal is not None:
        compute.update(spent(before_proposal, proposer.counter.snapshot(), "proposal_"))
    return RolloutResult(final, samples_per_prompt, diag, compute)
