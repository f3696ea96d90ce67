"""Methods that keep one of N candidates drawn by ancestral sampling.

* `best_of_n`        N samples from `base` or `low_temperature`; keep the one of highest
                     log p(x) (or of highest mean per-token log p, `select = "mean_log_p"`)
* `majority_vote`    N samples; keep one whose answer (`answer_of(tokens)`) is the most common

N is given, or matched to a power method's token budget (`mcmc_llm.evaluation.methods.budget`).
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from typing import Any, ClassVar

from mcmc_llm.evaluation.methods.ancestral import check_rule_fields, low_temperature
from mcmc_llm.core.validate import integer
from mcmc_llm.evaluation.methods.base import AnswerFn, Draw, Method, MethodSample, draw
from mcmc_llm.lm.generation import SamplingRule

SAMPLERS = ("base", "low_temperature")
SELECTIONS = ("log_p", "mean_log_p")


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
        integer("n", self.n)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        check_rule_fields(self)

    def rule(self) -> SamplingRule:
        if self.sampler == "base":
            temperature = 1.0 if self.temperature is None else self.temperature
        else:
            temperature = low_temperature(self.alpha, self.temperature)
        return SamplingRule(temperature, self.top_k, self.top_p)

    def rows_per_sample(self) -> int:
        return self.n  # a sample is chosen among n candidates, each a row

    def _generate(self, lm, prompts, samples_per_prompt, generator, seed, answer_of):
        rows = draw(lm, prompts, samples_per_prompt * self.n, self.max_new_tokens, self.rule(), generator)
        out = []
        for row in rows:
            groups = [row[j * self.n : (j + 1) * self.n] for j in range(samples_per_prompt)]
            out.append([self._choose(group, answer_of) for group in groups])
        return out

    def _budget(self, candidates: list[Draw]) -> dict[str, Any]:
        return {
            "n": self.n,
            "candidate_tokens": sum(c.length for c in candidates),
            "budget_tokens": self.budget_tokens,
            "candidate_log_p": [c.log_p for c in candidates],
            "candidate_lengths": [c.length for c in candidates],
        }

    @abstractmethod
    def _choose(self, candidates: list[Draw], answer_of: AnswerFn | None) -> MethodSample: ...


def _mean_log_p(d: Draw) -> float:
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
        return candidates[best].sample(chosen=best, **self._budget(candidates))


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
        return candidates[chosen].sample(
            chosen=chosen, answer=winner, votes=votes,
            agreement=(votes[winner] / len(candidates)) if winner is not None else 0.0, **self._budget(candidates),
        )
