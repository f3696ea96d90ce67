"""One-call convergence summary of a Trace: acceptance tables, ESS and R-hat, stuck-chain flags.

`summarize(trace)` reads the per-step arrays (chain, draw) recorded by the driver:

- stats `accepted` (and, when present, `acceptance_probability`, `stage`, `relative_cut`,
  `tokens_resampled`) for the acceptance tables;
- every scalar entry of `samples` (shape (chain, draw)), e.g. `log_p`, `log_target`, `length`, as a
  functional whose bulk / tail ESS and R-hat are computed across chains.

A trace is one prompt: its chains are independent chains on the same target.  Under the block-wise
power sampler the target changes with the stage, so pass `stage=-1` to compute ESS and R-hat on the
draws of the last stage only (where the target is `p^alpha` on the full length cap).

`format_summary(summary)` renders it as a plain-text table; `TraceSummary.to_dict()` as JSON-ready data.
Only numpy is imported here (ArviZ lazily, through `arviz_adapter`), never torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from mcmc_llm.diagnostics import arviz_adapter


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a functional is flagged.

    rhat_max: flag R-hat above this.  1.1 is the classic rule; Vehtari et al. (2021) recommend 1.01
        with 4+ long chains, which short LLM runs (N_MCMC ~ 10 steps per stage) rarely reach.
    min_ess: flag bulk or tail ESS below this (absolute, all chains together).
    """

    rhat_max: float = 1.1
    min_ess: float = 10.0


@dataclasses.dataclass(frozen=True)
class Flag:
    """A warning about the run.

    kind: "zero_acceptance" (a chain accepted nothing), "never_moved" (it accepted only proposals identical to
        its current state), "constant_chain" (a functional never changed within a
        chain), "rhat_nonfinite" (R-hat NaN or inf: e.g. constant or frozen chains), "rhat_high",
        "low_ess" (bulk or tail ESS below `min_ess`, or undefined).
    subject: what it is about, e.g. "chain 3" or "log_p" or "log_p, chain 2".
    """

    kind: str
    subject: str
    message: str


@dataclasses.dataclass(frozen=True)
class AcceptanceCell:
    """Acceptance over the MH moves falling in one group (a stage, or a bin of relative cut positions).

    key: the stage index (int) or the bin `(low, high)` of `relative_cut = cut_index / length`.
    acceptance_rate: fraction of moves accepted; mean_acceptance_probability: mean of `min(1, ratio)`
        (a lower-variance estimate of the same quantity; NaN when not recorded).
    """

    key: Any
    num_moves: int
    acceptance_rate: float
    mean_acceptance_probability: float


@dataclasses.dataclass(frozen=True)
class FunctionalDiagnostics:
    """ESS and R-hat of one scalar functional across chains (NaN where undefined)."""

    name: str
    mean: float
    sd: float
    ess_bulk: float
    ess_tail: float
    rhat: float
    constant_chains: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TraceSummary:
    num_chains: int
    num_draws: int
    num_moves: int
    acceptance_rate: float
    mean_acceptance_probability: float
    acceptance_per_chain: tuple[float, ...]
    by_stage: tuple[AcceptanceCell, ...]
    by_relative_cut: tuple[AcceptanceCell, ...]
    functionals: dict[str, FunctionalDiagnostics]
    flags: tuple[Flag, ...]
    tokens_resampled: float  # total over chains and steps (NaN when not recorded)
    moved_rate: float  # fraction of moves accepted AND different from the current state (NaN if not recorded)
    draws_used: str  # which draws ESS / R-hat were computed on
    thresholds: Thresholds

    @property
    def ok(self) -> bool:
        """True when nothing was flagged."""
        return not self.flags

    def flags_of_kind(self, kind: str) -> list[Flag]:
        return [flag for flag in self.flags if flag.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (lists, dicts, floats; NaN stays NaN) for JSON output."""
        return dataclasses.asdict(self)


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _cell(key: Any, accepted: np.ndarray, probability: np.ndarray | None, mask: np.ndarray) -> AcceptanceCell:
    moves = mask & ~np.isnan(accepted)
    return AcceptanceCell(
        key=key,
        num_moves=int(moves.sum()),
        acceptance_rate=_mean(accepted[moves]),
        mean_acceptance_probability=float("nan") if probability is None else _mean(probability[moves]),
    )


def acceptance_by_stage(trace: Any) -> tuple[AcceptanceCell, ...]:
    """Acceptance per stage (block index k, 0-based), from stats `accepted` and `stage`."""
    stats = trace.stats
    if "accepted" not in stats or "stage" not in stats:
        return ()
    accepted = np.asarray(stats["accepted"], dtype=np.float64)
    probability = _optional(stats, "acceptance_probability")
    stage = np.asarray(stats["stage"])
    return tuple(_cell(int(k), accepted, probability, stage == k) for k in np.unique(stage))


def relative_cut_bins(num_bins: int) -> np.ndarray:
    """Bin edges `0, 1/n, ..., 1` for the relative cut position `cut_index / length`."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins}")
    return np.linspace(0.0, 1.0, num_bins + 1)


def relative_cut_bin_index(relative_cut: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin of each relative cut (`floor(r * n)`, with r = 1 in the last bin); -1 for NaN."""
    relative_cut = np.asarray(relative_cut, dtype=np.float64)
    index = np.clip(np.floor(np.nan_to_num(relative_cut, nan=0.0) * num_bins), 0, num_bins - 1).astype(np.int64)
    return np.where(np.isnan(relative_cut), -1, index)


def acceptance_by_relative_cut(trace: Any, num_bins: int = 10) -> tuple[AcceptanceCell, ...]:
    """Acceptance per bin of `relative_cut` (cut index / current length in [0, 1]); empty bins have NaN."""
    stats = trace.stats
    if "accepted" not in stats or "relative_cut" not in stats:
        return ()
    accepted = np.asarray(stats["accepted"], dtype=np.float64)
    probability = _optional(stats, "acceptance_probability")
    index = relative_cut_bin_index(stats["relative_cut"], num_bins)
    edges = relative_cut_bins(num_bins)
    return tuple(
        _cell((float(edges[b]), float(edges[b + 1])), accepted, probability, index == b) for b in range(num_bins)
    )


def _optional(stats: Any, name: str) -> np.ndarray | None:
    return np.asarray(stats[name], dtype=np.float64) if name in stats else None


def scalar_functionals(trace: Any) -> list[str]:
    """Names of the `samples` entries that are one real number per (chain, draw)."""
    return [
        name for name, value in trace.samples.items()
        if np.asarray(value).ndim == 2 and np.asarray(value).dtype.kind in "biuf"
    ]


def _draw_mask(trace: Any, stage: int | None) -> tuple[np.ndarray | None, str]:
    if stage is None:
        return None, "all draws"
    if "stage" not in trace.stats:
        raise ValueError("stage= needs a `stage` entry in trace.stats")
    stages = np.asarray(trace.stats["stage"])
    chosen = int(stages.max()) if stage == -1 else int(stage)
    mask = (stages == chosen).all(axis=0)
    if not mask.any():
        raise ValueError(f"no draw is at stage {chosen} on every chain")
    return mask, f"stage {chosen} ({int(mask.sum())} draws per chain)"


def diagnose_functional(name: str, draws: np.ndarray) -> FunctionalDiagnostics:
    """Mean, sd, bulk and tail ESS and R-hat of `draws` (chain, draw).

    ESS is NaN for a functional constant over all draws (ArviZ would report N).  When every chain is
    constant, R-hat is NaN if they all hold the same value and inf otherwise.
    """
    draws = np.asarray(draws, dtype=np.float64)
    finite = draws[np.isfinite(draws)]
    constant_chains = tuple(
        c for c in range(draws.shape[0])
        if draws.shape[1] > 1 and not np.isnan(draws[c]).any() and draws[c].max() == draws[c].min()
    )
    everything_constant = finite.size > 0 and finite.max() == finite.min()
    if everything_constant:
        ess_bulk = ess_tail = float("nan")
    else:
        ess_bulk = arviz_adapter.ess(draws, "bulk")
        ess_tail = arviz_adapter.ess(draws, "tail")
    if draws.shape[0] >= 2 and len(constant_chains) == draws.shape[0]:
        # no within-chain variance: R-hat is 0/0 if the chains agree, B/0 = inf if they do not
        # (computed, it comes out as NaN or a huge finite number from rounding)
        rhat = float("nan") if everything_constant else float("inf")
    else:
        rhat = arviz_adapter.rhat(draws)
    return FunctionalDiagnostics(
        name=name,
        mean=float(finite.mean()) if finite.size else float("nan"),
        sd=float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        ess_bulk=ess_bulk,
        ess_tail=ess_tail,
        rhat=rhat,
        constant_chains=constant_chains,
    )


def _functional_flags(diag: FunctionalDiagnostics, num_chains: int, thresholds: Thresholds) -> list[Flag]:
    flags = [
        Flag("constant_chain", f"{diag.name}, chain {c}", f"{diag.name} never changed on chain {c}")
        for c in diag.constant_chains
    ]
    if num_chains >= 2:
        if not math.isfinite(diag.rhat):
            flags.append(Flag("rhat_nonfinite", diag.name,
                              f"R-hat of {diag.name} is {diag.rhat} (constant or frozen chains?)"))
        elif diag.rhat > thresholds.rhat_max:
            flags.append(Flag("rhat_high", diag.name,
                              f"R-hat of {diag.name} is {diag.rhat:.3f} > {thresholds.rhat_max}"))
    low = [(kind, value) for kind, value in (("bulk", diag.ess_bulk), ("tail", diag.ess_tail))
           if not (value >= thresholds.min_ess)]  # NaN counts as low
    if low:
        detail = ", ".join(f"{kind} ESS {value:.1f}" for kind, value in low)
        flags.append(Flag("low_ess", diag.name, f"{diag.name}: {detail} (< {thresholds.min_ess} or undefined)"))
    return flags


def summarize(
    trace: Any,
    *,
    var_names: Sequence[str] | None = None,
    stage: int | None = None,
    num_cut_bins: int = 10,
    thresholds: Thresholds = Thresholds(),
) -> TraceSummary:
    """Acceptance (overall, per chain, per stage, per relative-cut bin), ESS / R-hat, and flags.

    trace: a Trace, or any object with `samples` and `stats` mappings of (chain, draw, ...) arrays.
    var_names: functionals to diagnose (default: every scalar numeric entry of `trace.samples`).
    stage: compute ESS / R-hat only on the draws of this stage (-1: the last); acceptance tables always
        use every move.  None (default): all draws.
    """
    stats = trace.stats
    names = list(var_names) if var_names is not None else scalar_functionals(trace)
    mask, draws_used = _draw_mask(trace, stage)

    flags: list[Flag] = []
    if "accepted" in stats:
        accepted = np.asarray(stats["accepted"], dtype=np.float64)
        probability = _optional(stats, "acceptance_probability")
        overall = _cell("all", accepted, probability, np.ones(accepted.shape, dtype=bool))
        per_chain = tuple(_mean(accepted[c]) for c in range(accepted.shape[0]))
        changed = _optional(stats, "proposal_differs")
        for c in range(accepted.shape[0]):
            moves = int((~np.isnan(accepted[c])).sum())
            if moves and np.nansum(accepted[c]) == 0:
                flags.append(Flag("zero_acceptance", f"chain {c}", f"chain {c} accepted none of its {moves} moves"))
            elif moves and changed is not None and np.nansum(accepted[c] * changed[c]) == 0:
                flags.append(Flag("never_moved", f"chain {c}",
                                  f"chain {c} accepted {int(np.nansum(accepted[c]))} of {moves} moves, "
                                  "but every accepted proposal was identical to its current sequence"))
        moved_rate = _mean(accepted * changed) if changed is not None else float("nan")
    else:
        overall = AcceptanceCell("all", 0, float("nan"), float("nan"))
        per_chain = ()
        moved_rate = float("nan")

    functionals: dict[str, FunctionalDiagnostics] = {}
    num_chains = num_draws = 0
    for name in names:
        draws = np.asarray(trace.samples[name])
        if draws.ndim != 2:
            raise ValueError(f"samples[{name!r}] is not scalar per step: shape {draws.shape}")
        if mask is not None:
            draws = draws[:, mask]
        diag = diagnose_functional(name, draws)
        functionals[name] = diag
        flags.extend(_functional_flags(diag, draws.shape[0], thresholds))

    first = next(iter({**trace.samples, **stats}.values()), None)
    if first is not None:
        num_chains, num_draws = np.asarray(first).shape[:2]
    tokens = float(np.nansum(stats["tokens_resampled"])) if "tokens_resampled" in stats else float("nan")
    return TraceSummary(
        num_chains=int(num_chains),
        num_draws=int(num_draws),
        num_moves=overall.num_moves,
        moved_rate=moved_rate,
        acceptance_rate=overall.acceptance_rate,
        mean_acceptance_probability=overall.mean_acceptance_probability,
        acceptance_per_chain=per_chain,
        by_stage=acceptance_by_stage(trace),
        by_relative_cut=acceptance_by_relative_cut(trace, num_cut_bins),
        functionals=functionals,
        flags=tuple(flags),
        tokens_resampled=tokens,
        draws_used=draws_used,
        thresholds=thresholds,
    )


def _number(value: float, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: indent + "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return [line(header), indent + "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def _acceptance_rows(cells: Sequence[AcceptanceCell], label) -> list[list[str]]:
    return [[label(cell.key), str(cell.num_moves), _number(cell.acceptance_rate),
             _number(cell.mean_acceptance_probability)] for cell in cells]


def _bin_label(key: tuple[float, float]) -> str:
    return f"[{key[0]:.2f}, {key[1]:.2f}" + ("]" if key[1] >= 1.0 else ")")


def format_summary(summary: TraceSummary) -> str:
    """A readable plain-text report: header, acceptance tables, functionals table, flags."""
    lines = [f"Trace: {summary.num_chains} chains x {summary.num_draws} draws; ESS / R-hat on {summary.draws_used}"]
    lines.append(
        f"Acceptance: {_number(summary.acceptance_rate)} over {summary.num_moves} moves "
        f"(mean acceptance probability {_number(summary.mean_acceptance_probability)})"
        + (f"; the sequence changed on {_number(summary.moved_rate)} of moves" if not math.isnan(summary.moved_rate) else "")
    )
    if summary.acceptance_per_chain:
        lines.append("  per chain: " + " ".join(_number(rate, 2) for rate in summary.acceptance_per_chain))
    if not math.isnan(summary.tokens_resampled):
        lines.append(f"Tokens resampled: {summary.tokens_resampled:.0f}")
    header = ["", "moves", "accept", "mean A"]
    if summary.by_stage:
        lines += ["", "Acceptance by stage (block k, 0-based):"]
        lines += _table(["stage", *header[1:]], _acceptance_rows(summary.by_stage, str))
    if summary.by_relative_cut:
        lines += ["", "Acceptance by relative cut position (cut index / length):"]
        lines += _table(["cut bin", *header[1:]],
                        _acceptance_rows(summary.by_relative_cut, _bin_label))
    if summary.functionals:
        lines += ["", "Functionals (rank-normalised split R-hat; bulk / tail ESS over all chains):"]
        rows = [[d.name, _number(d.mean), _number(d.sd), _number(d.ess_bulk, 1), _number(d.ess_tail, 1),
                 _number(d.rhat), ",".join(map(str, d.constant_chains)) or "-"]
                for d in summary.functionals.values()]
        lines += _table(["functional", "mean", "sd", "ess_bulk", "ess_tail", "rhat", "constant chains"], rows)
    t = summary.thresholds
    lines += ["", f"Flags (R-hat > {t.rhat_max} or non-finite, ESS < {t.min_ess}, zero acceptance, constant chains):"]
    lines += _flag_lines(summary.flags) or ["  none"]
    return "\n".join(lines)


def _flag_lines(flags) -> list[str]:
    """One line per flag, except constant-chain flags, which are grouped per functional."""
    lines, constant = [], {}
    for flag in flags:
        if flag.kind == "constant_chain":
            name, chain = flag.subject.rsplit(", chain ", 1)
            if name not in constant:
                constant[name] = []
                lines.append(name)
            constant[name].append(chain)
        else:
            lines.append(f"  [{flag.kind}] {flag.message}")
    return [
        f"  [constant_chain] {line} never changed on chain(s) {','.join(constant[line])}" if line in constant else line
        for line in lines
    ]
