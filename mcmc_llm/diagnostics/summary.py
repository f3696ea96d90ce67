"""One-call convergence summary of a Trace: acceptance tables, ESS and R-hat, stuck-chain flags.

`summarize(trace)` reads the per-step arrays (chain, draw) recorded by the driver:

- stats `accepted` (and, when present, `acceptance_probability`, `stage`, `relative_cut`,
  `tokens_resampled`) for the acceptance tables;
- every scalar entry of `samples` (shape (chain, draw)), e.g. `log_p`, `log_target`, `length`, as a
  functional whose bulk / tail ESS and R-hat are computed across chains.

A trace is one prompt: its chains are independent chains on the same target.  Under the block-wise
power sampler the target changes with the stage, so pass `stage="last"` (or -1) to compute ESS and
R-hat on the draws of the last stage only (where the target is `p^alpha` on the full length cap);
`stage="all"` (or None) uses every draw, as `az.summary(trace_to_arviz(trace))` does (`stages`).

Float noise: a float functional whose values within a chain lie within `NOISE_RTOL` (1e-4) relative
of each other is a constant chain; when every chain is constant, R-hat is 1 if all the chains agree
within that tolerance (no between- or within-chain variance: the chains agree), inf if they do not.
What ArviZ logs or warns (e.g. fewer than 4 draws per chain) becomes a note of the summary.

`format_summary(summary)` renders it as a plain-text table; `TraceSummary.to_dict()` as JSON-ready data.
Only numpy is imported here (ArviZ lazily, through `arviz_adapter`), never torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import numpy as np

from mcmc_llm.diagnostics import arviz_adapter
from mcmc_llm.diagnostics.noise import NOISE_RTOL, within_tolerance
from mcmc_llm.diagnostics.stages import stage_mask
from mcmc_llm.diagnostics.acceptance import (
    AcceptanceCell, acceptance_by_relative_cut, acceptance_by_stage, acceptance_cell, nan_mean, optional_stat,
)


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
    notes: tuple[str, ...] = ()  # stated caveats: chains that agree by tolerance, what ArviZ warned about

    @property
    def ok(self) -> bool:
        """True when nothing was flagged."""
        return not self.flags

    def flags_of_kind(self, kind: str) -> list[Flag]:
        return [flag for flag in self.flags if flag.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (lists, dicts, floats; NaN stays NaN) for JSON output."""
        return dataclasses.asdict(self)


def scalar_functionals(trace: Any) -> list[str]:
    """Names of the `samples` entries that are one real number per (chain, draw)."""
    return [
        name for name, value in trace.samples.items()
        if np.asarray(value).ndim == 2 and np.asarray(value).dtype.kind in "biuf"
    ]


def diagnose_functional(name: str, draws: np.ndarray, rtol: float = NOISE_RTOL) -> FunctionalDiagnostics:
    """Mean, sd, bulk and tail ESS and R-hat of `draws` (chain, draw).

    A chain is constant when its values agree within `rtol` (`noise.within_tolerance`; integers
    exactly).  ESS is NaN for a functional constant over all draws (ArviZ would report N).  When
    every chain is constant, R-hat is 1 if all the chains agree within `rtol` (B = W = 0: the chains
    agree) and inf otherwise (B > 0 = W).
    """
    draws = np.asarray(draws)
    constant_chains = tuple(
        c for c in range(draws.shape[0])
        if draws.shape[1] > 1 and not np.isnan(draws[c].astype(np.float64)).any() and within_tolerance(draws[c], rtol)
    )
    everything_constant = within_tolerance(draws, rtol)
    draws = draws.astype(np.float64)
    finite = draws[np.isfinite(draws)]
    if everything_constant:
        ess_bulk = ess_tail = float("nan")
    else:
        ess_bulk = arviz_adapter.ess(draws, "bulk")
        ess_tail = arviz_adapter.ess(draws, "tail")
    if draws.shape[0] >= 2 and len(constant_chains) == draws.shape[0]:
        # no within-chain variance: computed, R-hat would be 0/0 (NaN) or B/0 (inf, or a huge finite
        # number from rounding); define it as 1 when the chains agree within the tolerance
        rhat = 1.0 if everything_constant else float("inf")
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


def _notes(functionals: dict[str, FunctionalDiagnostics], arviz_said: list[str]) -> tuple[str, ...]:
    """Stated caveats: functionals whose chains agree by tolerance, and what ArviZ warned about."""
    agree = [d.name for d in functionals.values()
             if d.rhat == 1.0 and len(d.constant_chains) > 1 and math.isnan(d.ess_bulk)]
    notes = []
    if agree:
        notes.append(f"{', '.join(agree)}: every chain holds one value and the chains agree within "
                     f"{NOISE_RTOL:g} relative: R-hat = 1 by definition, ESS undefined")
    for message in arviz_said:
        shape = re.search(r"Shape validation failed: input_shape: (\([^)]*\))", message)
        note = (f"too few draws: ESS / R-hat need at least 4 draws per chain (and 2 chains for R-hat), ArviZ "
                f"got (chains, draws) = {shape.group(1)}; they are undefined or unreliable") if shape else f"ArviZ: {message}"
        if note not in notes:
            notes.append(note)
    return tuple(notes)


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
    stage: str | int | None = None,
    num_cut_bins: int = 10,
    thresholds: Thresholds = Thresholds(),
) -> TraceSummary:
    """Acceptance (overall, per chain, per stage, per relative-cut bin), ESS / R-hat, and flags.

    trace: a Trace, or any object with `samples` and `stats` mappings of (chain, draw, ...) arrays.
    var_names: functionals to diagnose (default: every scalar numeric entry of `trace.samples`).
    stage: compute ESS / R-hat only on the draws of these stages (`stages.stage_mask`: "last" or -1,
        "all" or None (default), or a stage index); acceptance tables always use every move.
    """
    stats = trace.stats
    names = list(var_names) if var_names is not None else scalar_functionals(trace)
    mask, draws_used = stage_mask(trace, stage)

    flags: list[Flag] = []
    if "accepted" in stats:
        accepted = np.asarray(stats["accepted"], dtype=np.float64)
        probability = optional_stat(stats, "acceptance_probability")
        overall = acceptance_cell("all", accepted, probability, np.ones(accepted.shape, dtype=bool))
        per_chain = tuple(nan_mean(accepted[c]) for c in range(accepted.shape[0]))
        changed = optional_stat(stats, "proposal_differs")
        for c in range(accepted.shape[0]):
            moves = int((~np.isnan(accepted[c])).sum())
            if moves and np.nansum(accepted[c]) == 0:
                flags.append(Flag("zero_acceptance", f"chain {c}", f"chain {c} accepted none of its {moves} moves"))
            elif moves and changed is not None and np.nansum(accepted[c] * changed[c]) == 0:
                flags.append(Flag("never_moved", f"chain {c}",
                                  f"chain {c} accepted {int(np.nansum(accepted[c]))} of {moves} moves, "
                                  "but every accepted proposal was identical to its current sequence"))
        moved_rate = nan_mean(accepted * changed) if changed is not None else float("nan")
    else:
        overall = AcceptanceCell("all", 0, float("nan"), float("nan"))
        per_chain = ()
        moved_rate = float("nan")

    functionals: dict[str, FunctionalDiagnostics] = {}
    num_chains = num_draws = 0
    with arviz_adapter.arviz_messages() as arviz_said:
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
        notes=_notes(functionals, arviz_said),
    )


def _number(value: float, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """The lines of a plain-text table: `header`, a rule, `rows`; cells right-aligned per column."""
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
        lines += format_table(["stage", *header[1:]], _acceptance_rows(summary.by_stage, str))
    if summary.by_relative_cut:
        lines += ["", "Acceptance by relative cut position (cut index / length):"]
        lines += format_table(["cut bin", *header[1:]],
                        _acceptance_rows(summary.by_relative_cut, _bin_label))
    if summary.functionals:
        lines += ["", "Functionals (rank-normalised split R-hat; bulk / tail ESS over all chains):"]
        rows = [[d.name, _number(d.mean), _number(d.sd), _number(d.ess_bulk, 1), _number(d.ess_tail, 1),
                 _number(d.rhat), ",".join(map(str, d.constant_chains)) or "-"]
                for d in summary.functionals.values()]
        lines += format_table(["functional", "mean", "sd", "ess_bulk", "ess_tail", "rhat", "constant chains"], rows)
    t = summary.thresholds
    lines += ["", f"Flags (R-hat > {t.rhat_max} or non-finite, ESS < {t.min_ess}, zero acceptance, constant chains):"]
    lines += _flag_lines(summary.flags) or ["  none"]
    if summary.notes:
        lines += ["", "Notes:", *(f"  {note}" for note in summary.notes)]
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
