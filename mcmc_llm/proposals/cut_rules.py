"""Cut rules: the law `P(m | x)` of the index from which a suffix is resampled.

A cut rule maps every chain's current sequence (length L) to log-probabilities over the cut
positions `m in {lo, ..., L-1}` (0-based generated positions; `lo` is 0, or the current block's
first position for the within-block window).  Because `P(m | x)` is a function of `x` alone, the
reverse move's `P(m | x')` is the same function evaluated at the proposal, and the MH ratio keeps
the term `log P(m | x') - log P(m | x)`.

The protocol (`CutRule`) has four parts:

* `log_probs(position, block_start)`: the law, [C, capacity], -inf where m is not allowed;
* `sample(streams, position, block_start)`: one cut per chain from it;
* `reads_lengths_only`: True when `P(m | x)` depends on x only through its length.  The
  asynchronous driver then draws the next step's cut before the accepted sequence is known
  (pre-fetching on acceptance); a rule that reads tokens or their statistics must say False;
* `expected_resampled(length, block_start)`: E[L - m] for a sequence of `length` tokens, the
  tokens one MH step resamples when no EOS is drawn (it feeds `power_token_budget`).

Optionally, `reverse_bound(cut_index, block_start) -> (weight, base)`, each [C]: a promise that
`log P(m | y) <= -weight * log(base + t)` for every y with at least m + t generated tokens, t >= 1
(the reverse move's cut term falls as a proposal grows).  Exact early rejection
(`mcmc_llm.lm.early_stop`) needs it; a rule without it (`CutRuleBase` returns None; priority and
entropy cuts, whose law reads the tokens, cannot give one) runs every proposal to its end.

`CutRuleBase` implements `sample` and `expected_resampled` from `log_probs`, so a new rule writes
only `log_probs` (and says whether it reads only lengths).  The built-ins:

* `uniform`      P(m|x) = 1/L                                       (the paper)
* `within-block` P(m|x) = 1/(L - lo) on the current block          (the author's note)
* `restart`      P(0|x) = 1: regenerate the whole answer            (an independence sampler)
* `priority`     P(m|x) ∝ exp(beta * s_m),  s_m = -log p_prop(x_m | x_<m), the surprisal
* `entropy`      P(m|x) ∝ exp(beta * max(0, H_m - H_{m-1})),  H_t = H(p(. | x_<t)), H_{-1} = H_0

Priority and entropy rules put positive mass on every position (a softmax of finite scores),
so the kernels stay irreducible.  Names are only a registry (`CUT_RULES`, `resolve_cut_rule`)
for the CLI and configs; everything else takes rule objects.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol, runtime_checkable

import torch

from mcmc_llm.core.random import Source, categorical
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch


@runtime_checkable
class CutRule(Protocol):
    """The law of the cut index given a sequence (module docstring)."""

    reads_lengths_only: bool

    def log_probs(self, position: SequenceBatch, block_start: int) -> torch.Tensor:
        """`log P(m | x)` for every chain and position, [C, capacity]; -inf where m is not allowed."""
        ...

    def sample(self, source: Source, position: SequenceBatch, block_start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cut index [C], `log_probs` [C, capacity]); a chain with no allowed cut gets its length."""
        ...

    def expected_resampled(self, length: int, block_start: int) -> float:
        """E[L - m] for a sequence of `length` tokens."""
        ...


def positions_allowed(position: SequenceBatch, lowest: "int | torch.Tensor" = 0) -> torch.Tensor:
    """[C, capacity]: `lowest <= m < L`, the generated positions a cut may take (`lowest` one
    number, or one per chain, e.g. `position.lengths // 2`)."""
    positions = torch.arange(position.capacity, device=position.tokens.device)[None]
    lowest = torch.as_tensor(lowest, device=positions.device)
    lowest = lowest[:, None] if lowest.dim() == 1 else lowest
    return (positions >= lowest) & (positions < position.lengths[:, None])


def normalised(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """`log softmax(scores)` over the allowed positions of every row, -inf elsewhere (all -inf
    for a row with none allowed)."""
    scores = torch.where(allowed, scores, torch.full_like(scores, -math.inf))
    normaliser = torch.logsumexp(scores, dim=-1, keepdim=True)
    return torch.where(allowed, scores - normaliser, scores)


class CutRuleBase:
    """Base class for cut rules: write `log_probs`; `sample` and `expected_resampled` follow.

    `reads_lengths_only` defaults to False (always safe; True enables pre-fetching on acceptance
    and must hold exactly).  `expected_resampled` evaluates `log_probs` on a sequence of the given
    length when the rule reads only lengths; otherwise it returns the uniform rule's (L + 1) / 2,
    an estimate (content-dependent rules have no length-only expectation)."""

    name = "custom"
    reads_lengths_only = False

    def log_probs(self, position: SequenceBatch, block_start: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define log_probs(position, block_start)")

    def sample(self, source: Source, position: SequenceBatch, block_start: int) -> tuple[torch.Tensor, torch.Tensor]:
        log_cut = self.log_probs(position, block_start)
        movable = torch.isfinite(log_cut).any(-1)
        cut = categorical(source, torch.where(movable[:, None], log_cut, torch.zeros_like(log_cut)))
        return torch.where(movable, cut, position.lengths), log_cut

    def reverse_bound(self, cut_index: torch.Tensor, block_start: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """No bound by default (module docstring): proposals under this rule are never stopped early."""
        return None

    def expected_resampled(self, length: int, block_start: int) -> float:
        if length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        if not self.reads_lengths_only:
            return (length + 1) / 2
        probe = _probe(length)
        law = torch.exp(self.log_probs(probe, block_start)[0])
        return float((law * (length - torch.arange(length, dtype=torch.float64))).sum())

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)) if dataclasses.is_dataclass(self) else ""
        return f"{type(self).__name__}({fields})"


def _probe(length: int) -> SequenceBatch:
    """One chain of `length` generated tokens with neutral statistics (for length-only rules)."""
    empty = SequenceBatch.empty(TokenBatch.from_lists([[]]), length)
    return dataclasses.replace(empty, lengths=torch.as_tensor([length]))


@dataclasses.dataclass(frozen=True, repr=False)
class UniformCut(CutRuleBase):
    """P(m | x) = 1/L over all generated positions (the paper)."""

    name = "uniform"
    reads_lengths_only = True

    def log_probs(self, position, block_start):
        return normalised(torch.zeros_like(position.log_q), positions_allowed(position))

    def reverse_bound(self, cut_index, block_start):
        """log P(m | y) = -log L_y <= -log(m + t)."""
        return torch.ones_like(cut_index, dtype=torch.float64), cut_index.to(torch.float64)

    def expected_resampled(self, length, block_start):
        return (length + 1) / 2


@dataclasses.dataclass(frozen=True, repr=False)
class WithinBlockCut(CutRuleBase):
    """P(m | x) = 1/(L - lo) on the current block, lo = `block_start` (the author's note)."""

    name = "within-block"
    reads_lengths_only = True

    def log_probs(self, position, block_start):
        return normalised(torch.zeros_like(position.log_q), positions_allowed(position, block_start))

    def reverse_bound(self, cut_index, block_start):
        """log P(m | y) = -log(L_y - lo) <= -log(m - lo + t), for a cut m >= lo in the block."""
        return torch.ones_like(cut_index, dtype=torch.float64), (cut_index - block_start).to(torch.float64)

    def expected_resampled(self, length, block_start):
        return (length - block_start + 1) / 2 if length > block_start else 0.0


@dataclasses.dataclass(frozen=True, repr=False)
class RestartCut(CutRuleBase):
    """P(0 | x) = 1: regenerate the whole answer (an independence sampler)."""

    name = "restart"
    reads_lengths_only = True

    def log_probs(self, position, block_start):
        allowed = positions_allowed(position) & (torch.arange(position.capacity, device=position.tokens.device)[None] == 0)
        return normalised(torch.zeros_like(position.log_q), allowed)

    def reverse_bound(self, cut_index, block_start):
        """log P(0 | y) = 0 for every y."""
        zeros = torch.zeros_like(cut_index, dtype=torch.float64)
        return zeros, zeros + 1.0

    def expected_resampled(self, length, block_start):
        return float(length)


def _check_sharpness(value) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"cut sharpness must be a finite number >= 0, got {value!r}")


@dataclasses.dataclass(frozen=True, repr=False)
class SharpenedCut(CutRuleBase):
    """P(m | x) ∝ exp(sharpness * score_m(x)) over all generated positions, for a subclass's `scores`."""

    sharpness: float = 1.0

    def __post_init__(self):
        _check_sharpness(self.sharpness)

    def scores(self, position: SequenceBatch) -> torch.Tensor:
        raise NotImplementedError

    def log_probs(self, position, block_start):
        return normalised(self.sharpness * self.scores(position), positions_allowed(position))


@dataclasses.dataclass(frozen=True, repr=False)
class PriorityCut(SharpenedCut):
    """score_m = -log p_prop(x_m | x_<m), the surprisal: cut where the proposal was surprised."""

    name = "priority"

    def scores(self, position):
        return torch.clamp(-position.log_q, max=1e4)


@dataclasses.dataclass(frozen=True, repr=False)
class EntropyCut(SharpenedCut):
    """score_m = max(0, H_m - H_{m-1}): cut where the next-token entropy jumps."""

    name = "entropy"

    def scores(self, position):
        previous = torch.cat([position.entropy[:, :1], position.entropy[:, :-1]], dim=1)
        return torch.clamp(position.entropy - previous, min=0.0)


_REGISTRY = {rule.name: rule for rule in (UniformCut, WithinBlockCut, RestartCut, PriorityCut, EntropyCut)}
CUT_RULES = tuple(_REGISTRY)  # the names the CLI and configs accept
SHARPENED = ("priority", "entropy")  # the named rules that take a sharpness


def resolve_cut_rule(spec: "str | CutRule", sharpness: float = 1.0) -> CutRule:
    """A cut rule object from a registry name (with `sharpness` for priority and entropy cuts), or
    `spec` itself when it already implements the protocol."""
    if isinstance(spec, str):
        if spec not in _REGISTRY:
            raise ValueError(f"unknown cut rule {spec!r}; allowed: {', '.join(CUT_RULES)}, or a CutRule object")
        _check_sharpness(sharpness)
        return _REGISTRY[spec](sharpness) if spec in SHARPENED else _REGISTRY[spec]()
    missing = [name for name in ("log_probs", "sample", "expected_resampled") if not callable(getattr(spec, name, None))]
    if missing or not isinstance(getattr(spec, "reads_lengths_only", None), bool):
        what = ", ".join(missing) + (" and a bool reads_lengths_only" if not isinstance(getattr(spec, "reads_lengths_only", None), bool) else "")
        raise TypeError(f"{type(spec).__name__} is not a cut rule: it lacks {what.strip(', ')} (subclass mcmc_llm.proposals.cut_rules.CutRuleBase)")
    return spec
