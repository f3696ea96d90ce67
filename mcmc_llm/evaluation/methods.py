"""Sampling methods compared by the evaluation runner, all through the one generation path.

Every method draws tokens with `sample_continuations` (directly, or inside `power_sample`), or,
for `smc` and `rollout`, in their own token loops that count into the same counters, so every
method's compute shows in the LM's `ComputeCounter` the same way.  Common interface:

    method.generate(lm, prompts, samples_per_prompt, seed, *, answer_of=None)
        -> list (per prompt) of list (per sample) of MethodSample

* `base`             x ~ p                                   (tau = 1, full support)
* `low_temperature`  x_t ~ p(x_t | x_<t)^(1/tau), tau = 1/alpha by default
* `greedy`           x_t = argmax p(x_t | x_<t)              (SamplingRule(0.0))
* `power`            Algorithm 1 (block-wise MH) targeting p(x)^alpha; any kernel, any
                     `PowerSamplerConfig` field
* `best_of_n`        N samples from `base` or `low_temperature`; keep the one of highest
                     log p(x) (or of highest mean per-token log p, `select = "mean_log_p"`)
* `majority_vote`    N samples; keep one whose answer (`answer_of(tokens)`) is the most common
* `smc`              Power-SMC targeting p(x)^alpha (`power_smc`): each sample is one independent
                     run with `particles` particles and one draw from its final weighted particles
* `rollout`          the rollout sampler (`rollout_sample`): top-K candidates, zeta estimated by
                     rollouts; each sample is one independent draw (biased, see docs/smc.md)

Budget matching (METHOD §4): one power-sampling chain whose sequences have length T samples about

    T + N_MCMC * sum_{k=1}^{K} E[tokens resampled at stage k]      (K = ceil(T / B))

tokens; with uniform cuts E = (min(kB, T) + 1) / 2, which gives ≈ N_MCMC T^2 / (4B) + T.  With
within-block cuts E = (block length + 1) / 2 (≈ N_MCMC T / 2 + T); with restart cuts E = min(kB, T).
Priority and entropy cuts use the uniform estimate.  `power_token_budget` computes this, and
`matched_n(budget, T) = max(1, round(budget / T))` is the N whose N * T tokens match it.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Sequence

import torch

from mcmc_llm.core.random import make_generator
from mcmc_llm.lm.generation import SamplingRule, sample_continuations
from mcmc_llm.lm.protocol import LanguageModel, TokenBatch
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample
from mcmc_llm.targets.sequence import check_alpha
from mcmc_llm.smc.outputs import rollout_chains, smc_chains
from mcmc_llm.smc.power_smc import SMCConfig
from mcmc_llm.smc.rollout import RolloutConfig

AnswerFn = Callable[[Sequence[int]], "str | None"]
SAMPLERS = ("base", "low_temperature")
SELECTIONS = ("log_p", "mean_log_p")


@dataclasses.dataclass(frozen=True)
class MethodSample:
    """One output of a method: generated `tokens` (EOS included when emitted), `log_p` = sum of the
    base model's log p over them, `length`, `ended` (with EOS), method `diagnostics`, `compute`:
    the LM counters spent by the generate call, divided by the number of samples it returned, and
    `entropy` = sum over the tokens of the entropy H(p(. | prefix)) of the base model's next-token
    distribution (its mean per token is the confidence measure of the results figures)."""

    tokens: list[int]
    log_p: float
    length: int
    ended: bool
    diagnostics: dict[str, Any] = dataclasses.field(default_factory=dict)
    compute: dict[str, float] = dataclasses.field(default_factory=dict)
    entropy: float = math.nan


@dataclasses.dataclass(frozen=True)
class _Draw:
    tokens: list[int]
    log_p: float
    ended: bool
    entropy: float

    @property
    def length(self) -> int:
        return len(self.tokens)


def _check_request(prompts: Sequence[Sequence[int]], samples_per_prompt: int, seed: int) -> None:
    if len(prompts) == 0:
        raise ValueError("generate needs at least one prompt, got none")
    if isinstance(samples_per_prompt, bool) or not isinstance(samples_per_prompt, int) or samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be a positive integer, got {samples_per_prompt!r}")
    make_generator(seed)  # validates the seed


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def draw(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    count: int,
    max_new_tokens: int,
    rule: SamplingRule,
    generator: torch.Generator,
) -> list[list[_Draw]]:
    """`count` continuations of every prompt from one batched `sample_continuations` call."""
    rows = [list(prompt) for prompt in prompts for _ in range(count)]
    contexts = TokenBatch.from_lists(rows, device=lm.device)
    continuation = sample_continuations(lm, contexts, max_new_tokens, rule, generator)
    tokens = continuation.tokens.to_lists()
    inside = torch.arange(continuation.log_p.shape[1], device=continuation.log_p.device)[None] < continuation.tokens.lengths[:, None]
    log_p = torch.where(inside, continuation.log_p, 0.0).sum(-1).tolist()
    entropy = torch.where(inside, continuation.entropy, 0.0).sum(-1).tolist()
    ended = continuation.ended.tolist()
    flat = [_Draw(tokens[r], float(log_p[r]), bool(ended[r]), float(entropy[r])) for r in range(len(rows))]
    return [flat[i * count : (i + 1) * count] for i in range(len(prompts))]


def _share(spent: dict[str, int], parts: int) -> dict[str, float]:
    """Counters split evenly over the samples of one call (exact when the call made one sample)."""
    return {key: value // parts if value % parts == 0 else value / parts for key, value in spent.items()}


class Method(ABC):
    """A way of producing samples for prompts.  Subclasses are frozen dataclasses whose fields are
    the method's settings (the config keys of its kind)."""

    kind: ClassVar[str]
    max_new_tokens: int

    def generate(
        self,
        lm: LanguageModel,
        prompts: Sequence[Sequence[int]],
        samples_per_prompt: int,
        seed: int,
        *,
        answer_of: AnswerFn | None = None,
    ) -> list[list[MethodSample]]:
        """`samples_per_prompt` samples for every prompt, a deterministic function of `seed`.

        answer_of(tokens) -> str | None: the answer a completion gives (majority vote only); the
        runner builds it from the task's `extract_answer` (else the decoded text).
        """
        _check_request(prompts, samples_per_prompt, seed)
        before = lm.counter.snapshot()
        samples = self._generate(lm, prompts, samples_per_prompt, make_generator(seed), seed, answer_of)
        after = lm.counter.snapshot()
        compute = _share({key: after[key] - before[key] for key in after}, len(prompts) * samples_per_prompt)
        return [[dataclasses.replace(s, compute=dict(compute)) for s in row] for row in samples]

    @abstractmethod
    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of) -> list[list[MethodSample]]:
        """The samples, without `compute` (filled in by `generate`)."""

    def settings(self) -> dict[str, Any]:
        """The method's settings as a plain dict (for records and fingerprints)."""
        return {"kind": self.kind, **_plain(dataclasses.asdict(self))}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _sample(d: _Draw, **diagnostics) -> MethodSample:
    return MethodSample(d.tokens, d.log_p, d.length, d.ended, diagnostics, entropy=d.entropy)


class _Ancestral(Method):
    """Independent samples token by token from a fixed `SamplingRule`."""

    @abstractmethod
    def rule(self) -> SamplingRule: ...

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        rule = self.rule()
        rows = draw(lm, prompts, samples_per_prompt, self.max_new_tokens, rule, generator)
        return [[_sample(d, temperature=rule.temperature) for d in row] for row in rows]


def _check_rule_fields(method) -> None:
    _positive_int("max_new_tokens", method.max_new_tokens)
    method.rule()  # validates temperature, top_k, top_p


@dataclasses.dataclass(frozen=True)
class BaseSampling(_Ancestral):
    """x ~ p: temperature 1, full support unless top_k / top_p truncate it."""

    kind: ClassVar[str] = "base"
    max_new_tokens: int = 512
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        _check_rule_fields(self)

    def rule(self) -> SamplingRule:
        return SamplingRule(1.0, self.top_k, self.top_p)


def _low_temperature(alpha: float, temperature: float | None) -> float:
    check_alpha(alpha)
    if temperature is not None:
        return temperature
    return 0.25 if math.isinf(alpha) else 1.0 / alpha


@dataclasses.dataclass(frozen=True)
class LowTemperatureSampling(_Ancestral):
    """x_t ~ p(x_t | x_<t)^(1/tau) normalised per token; tau = `temperature`, default 1/alpha."""

    kind: ClassVar[str] = "low_temperature"
    max_new_tokens: int = 512
    alpha: float = 4.0
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        _check_rule_fields(self)

    def rule(self) -> SamplingRule:
        return SamplingRule(_low_temperature(self.alpha, self.temperature), self.top_k, self.top_p)


@dataclasses.dataclass(frozen=True)
class GreedyDecoding(_Ancestral):
    """x_t = argmax_v p(v | x_<t) (SamplingRule(0.0)); every sample of a prompt is the same."""

    kind: ClassVar[str] = "greedy"
    max_new_tokens: int = 512

    def __post_init__(self):
        _positive_int("max_new_tokens", self.max_new_tokens)

    def rule(self) -> SamplingRule:
        return SamplingRule(0.0)


@dataclasses.dataclass(frozen=True)
class PowerSampling(Method):
    """Block-wise MH targeting p(x)^alpha (`power_sample`); one chain per sample, all chains of a
    call batched.  Diagnostics per chain: acceptance rate, MH steps, tokens resampled, and the
    acceptance rate of every stage."""

    kind: ClassVar[str] = "power"
    config: PowerSamplerConfig = PowerSamplerConfig()

    @property
    def max_new_tokens(self) -> int:
        return self.config.max_new_tokens

    def settings(self) -> dict[str, Any]:
        settings = _plain(dataclasses.asdict(self.config))
        if settings["batching"] == "lockstep":  # records written before `batching` existed ran lock-step:
            del settings["batching"], settings["prefetch"]  # leaving them out keeps their fingerprints, so they still resume
        return {"kind": self.kind, **settings}

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        result = power_sample(lm, [list(p) for p in prompts], self.config, chains_per_prompt=samples_per_prompt, seed=seed)
        sequences = result.sequences()
        log_p = result.final.total_log_p().tolist()
        entropy = result.final.total(result.final.entropy).tolist()
        ended = result.final.ended.tolist()
        trace = result.trace
        samples = []
        for row, tokens in enumerate(sequences):
            diagnostics: dict[str, Any] = {"steps": 0, "acceptance_rate": None, "tokens_resampled": 0, "acceptance_by_stage": []}
            if trace is not None:
                accepted = trace.stats["accepted"][row].astype(float)
                stages = trace.stats["stage"][row]
                diagnostics = {
                    "steps": int(accepted.shape[0]),
                    "acceptance_rate": float(accepted.mean()) if accepted.size else None,
                    "tokens_resampled": int(trace.stats["tokens_resampled"][row].sum()),
                    "acceptance_by_stage": [float(accepted[stages == s].mean()) for s in sorted(set(stages.tolist()))],
                    # every MH step in order: its stage, cut position relative to the current length, outcome
                    "step_stage": stages.astype(int).tolist(),
                    "step_relative_cut": [round(float(c), 4) for c in trace.stats["relative_cut"][row]],
                    "step_accepted": accepted.astype(int).tolist(),
                }
            samples.append(MethodSample(tokens, float(log_p[row]), len(tokens), bool(ended[row]), diagnostics, entropy=float(entropy[row])))
        return [samples[i * samples_per_prompt : (i + 1) * samples_per_prompt] for i in range(len(prompts))]


def power_token_budget(config: PowerSamplerConfig, length: float | None = None) -> float:
    """Expected tokens sampled by one chain of Algorithm 1 whose sequences have `length` tokens
    (default: the cap `config.max_new_tokens`): the extensions (T) plus N_MCMC resampled suffixes
    per stage (see the module docstring for E[resampled] per kernel)."""
    cap = config.max_new_tokens
    length = float(cap if length is None else min(length, cap))
    if length <= 0:
        raise ValueError(f"expected length must be positive, got {length}")
    block = config.block_size
    resampled = 0.0
    for stage in range(1, math.ceil(length / block) + 1):
        current = min(stage * block, length)
        if config.kernel == "within-block":
            resampled += (current - (stage - 1) * block + 1) / 2
        elif config.kernel == "restart":
            resampled += current
        else:  # uniform; also the estimate for priority and entropy cuts
            resampled += (current + 1) / 2
    return length + config.mcmc_steps * resampled


def matched_n(budget_tokens: float, expected_length: float) -> int:
    """N such that N samples of `expected_length` tokens spend about `budget_tokens` tokens."""
    if not expected_length > 0:
        raise ValueError(f"expected_length must be positive, got {expected_length!r}")
    return max(1, int(round(budget_tokens / expected_length)))


@dataclasses.dataclass(frozen=True)
class _Candidates(Method):
    """N candidates per sample from `sampler` ("base": tau = 1; "low_temperature": tau =
    `temperature` or 1/alpha).  `budget_tokens` / `expected_length` / `matched_to` only record how
    N was chosen (see `matched_n`)."""

    max_new_tokens: int = 512
    n: int = 8
    sampler: str = "base"
    alpha: float = 4.0
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    budget_tokens: float | None = None
    expected_length: float | None = None
    matched_to: str | None = None

    def __post_init__(self):
        _positive_int("n", self.n)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        _check_rule_fields(self)

    def rule(self) -> SamplingRule:
        if self.sampler == "base":
            temperature = 1.0 if self.temperature is None else self.temperature
        else:
            temperature = _low_temperature(self.alpha, self.temperature)
        return SamplingRule(temperature, self.top_k, self.top_p)

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        rows = draw(lm, prompts, samples_per_prompt * self.n, self.max_new_tokens, self.rule(), generator)
        out = []
        for row in rows:
            groups = [row[j * self.n : (j + 1) * self.n] for j in range(samples_per_prompt)]
            out.append([self._choose(group, answer_of) for group in groups])
        return out

    def _budget(self, candidates: list[_Draw]) -> dict[str, Any]:
        return {
            "n": self.n,
            "candidate_tokens": sum(c.length for c in candidates),
            "budget_tokens": self.budget_tokens,
            "candidate_log_p": [c.log_p for c in candidates],
            "candidate_lengths": [c.length for c in candidates],
        }

    @abstractmethod
    def _choose(self, candidates: list[_Draw], answer_of: AnswerFn | None) -> MethodSample: ...


def _mean_log_p(d: _Draw) -> float:
    return d.log_p / max(d.length, 1)


@dataclasses.dataclass(frozen=True)
class BestOfN(_Candidates):
    """argmax over N candidates of log p(x) (`select = "log_p"`) or log p(x) / |x| ("mean_log_p");
    ties go to the earliest candidate."""

    kind: ClassVar[str] = "best_of_n"
    select: str = "log_p"

    def __post_init__(self):
        super().__post_init__()
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}")

    def _choose(self, candidates, answer_of):
        score = (lambda d: d.log_p) if self.select == "log_p" else _mean_log_p
        best = max(range(len(candidates)), key=lambda i: (score(candidates[i]), -i))
        return _sample(candidates[best], chosen=best, **self._budget(candidates))


@dataclasses.dataclass(frozen=True)
class MajorityVote(_Candidates):
    """The most common answer among N candidates (`answer_of(tokens)`; candidates without an answer
    do not vote).  The returned completion is the highest-log p candidate giving that answer; ties
    between answers go to the answer whose best candidate has the higher log p.  If no candidate
    gives an answer, the highest-log p candidate is returned."""

    kind: ClassVar[str] = "majority_vote"

    def _choose(self, candidates, answer_of):
        answer = answer_of if answer_of is not None else (lambda tokens: " ".join(map(str, tokens)))
        answers = [answer(c.tokens) for c in candidates]
        votes: dict[str, int] = {}
        for a in answers:
            if a is not None:
                votes[a] = votes.get(a, 0) + 1
        order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].log_p, i))
        if votes:
            top = max(votes.values())
            winner = next(answers[i] for i in order if answers[i] is not None and votes[answers[i]] == top)
            chosen = next(i for i in order if answers[i] == winner)
        else:
            winner, chosen = None, order[0]
        return _sample(
            candidates[chosen], chosen=chosen, answer=winner, votes=votes,
            agreement=(votes[winner] / len(candidates)) if winner is not None else 0.0, **self._budget(candidates),
        )


def _chain_samples(final, extras, prompts, samples_per_prompt) -> list[list[MethodSample]]:
    """MethodSamples from one sequence per chain (rows prompt-major) and per-chain diagnostics."""
    log_p = final.total_log_p().tolist()
    entropy = final.total(final.entropy).tolist()
    ended = final.ended.tolist()
    samples = [
        MethodSample(tokens, float(log_p[row]), len(tokens), bool(ended[row]), dict(extras[row]), entropy=float(entropy[row]))
        for row, tokens in enumerate(final.to_lists())
    ]
    return [samples[i * samples_per_prompt : (i + 1) * samples_per_prompt] for i in range(len(prompts))]


@dataclasses.dataclass(frozen=True)
class SMCSampling(Method):
    """Power-SMC targeting p(x)^alpha (`mcmc_llm.smc.power_smc`); one independent run of `particles`
    particles per sample, all runs of a call batched; the sample is one draw from the run's final
    weighted particles (as `mcmc-llm sample --sampler smc`).  The fields mirror `SMCConfig`
    (`particles` = `num_particles`).  Diagnostics per sample: `log_normalizer` (log Z_hat),
    `final_ess`, `resampling_events`, `distinct_particles`."""

    kind: ClassVar[str] = "smc"
    max_new_tokens: int = 512
    alpha: float = 4.0
    particles: int = 16
    resampling: str = "systematic"
    ess_threshold: float = 0.5
    proposal_temperature: float | None = None
    ramp_tokens: int = 0
    rejuvenation_steps: int = 0
    rejuvenation_kernel: str = "uniform"

    def __post_init__(self):
        self.config()  # validates every field

    def config(self) -> SMCConfig:
        return SMCConfig(
            alpha=self.alpha, max_new_tokens=self.max_new_tokens, num_particles=self.particles,
            resampling=self.resampling, ess_threshold=self.ess_threshold,
            proposal_temperature=self.proposal_temperature, ramp_tokens=self.ramp_tokens,
            rejuvenation_steps=self.rejuvenation_steps, rejuvenation_kernel=self.rejuvenation_kernel,
        )

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        final, extras, _ = smc_chains(lm, prompts, self.config(), samples_per_prompt, seed)
        return _chain_samples(final, extras, prompts, samples_per_prompt)


@dataclasses.dataclass(frozen=True)
class RolloutSampling(Method):
    """The rollout sampler (`mcmc_llm.smc.rollout`): next token from p^alpha(v) zeta_hat(v) over the
    `top_candidates` most likely tokens, zeta estimated with `rollouts` rollouts each (jackknifed
    unless `jackknife = false`); one independent draw per sample, all batched (as `mcmc-llm sample
    --sampler rollout`).  Diagnostics per sample: `min_tempered_mass_covered`, `jackknife_clipped_steps`."""

    kind: ClassVar[str] = "rollout"
    max_new_tokens: int = 512
    alpha: float = 4.0
    top_candidates: int = 8
    rollouts: int = 4
    jackknife: bool = True
    proposal_temperature: float | None = None
    horizon: int | None = None

    def __post_init__(self):
        self.config()  # validates every field

    def config(self) -> RolloutConfig:
        return RolloutConfig(
            alpha=self.alpha, max_new_tokens=self.max_new_tokens, top_candidates=self.top_candidates,
            rollouts=self.rollouts, proposal_temperature=self.proposal_temperature, jackknife=self.jackknife,
            horizon=self.horizon,
        )

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        final, extras, _ = rollout_chains(lm, prompts, self.config(), samples_per_prompt, seed)
        return _chain_samples(final, extras, prompts, samples_per_prompt)


METHOD_KINDS: dict[str, type[Method]] = {
    cls.kind: cls for cls in (BaseSampling, LowTemperatureSampling, GreedyDecoding, PowerSampling, BestOfN, MajorityVote,
                        SMCSampling, RolloutSampling)
}
