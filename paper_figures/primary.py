"""The pre-registered primary test of docs/results.md ("The pre-registered primary test"), written
and committed before its records existed.

    python paper_figures/primary.py --pilot    # the cap rule: EOS shares of the length pilot per candidate cap
    python paper_figures/primary.py            # the primary test on primary.jsonl -> primary.png
    python paper_figures/primary.py --study multistep [--pilot]   # the multi-step test, the same analysis
                                               # on multistep.jsonl (pilot multistep_pilot.jsonl) -> multistep.png

The multi-step test (docs/results.md, "The pre-registered multi-step test") is registered with the
same cap rule, hypotheses and analysis, on 72 problems of arithmetic difficulties 2 and 3; it also
reports both differences within each difficulty (descriptive: intervals, no test).

The cap rule.  T is the smallest candidate cap (`CAPS`) at which at least `FINISH_SHARE` of the
low-temperature pilot's outputs end with EOS within T tokens; if no candidate reaches it, the
smallest whose share is within 0.01 of the highest.  A pilot output sampled with
T_max = 512 that ends within T is exactly a draw at cap T that ends; one that does not is one
that hits cap T.  The pilot's accuracy is not computed.

The primary test, on the 72 problems of `primary.jsonl`, strict grading
(`mcmc_llm.evaluation.grading`: a "boxed" or "answer is N" answer; an output stating none is wrong):

* per-problem accuracy a_i = mean over the problem's outputs of "correct" (pass@1), or for the
  majority vote over N outputs the exact mean over every N-subset of its stored outputs
  (`mcmc_llm.evaluation.selection`);
* H1: power pass@1 - low-temperature pass@1;
* H2: power pass@1 - low-temperature majority@N at equal tokens, N = round(power's mean
  `compute.tokens_sampled` per output / low temperature's), the tokens each actually decoded
  (early rejection's savings included); N is clipped to the 16 stored samples, and the clipping
  is printed (it would give power more tokens than the baseline);
* for each: the mean of d_i over problems, its 95% paired percentile-bootstrap interval (2000
  resamples, seed 0), the two-sided sign-flip permutation p-value (200000 flips, seed 0) and its
  Holm adjustment over {H1, H2}; a difference is significant when the adjusted p < 0.05.

Reported with it, whatever the tests show: per arm, the share of outputs ending with EOS, mean
length (all outputs and finished ones), strict accuracy among finished outputs, lenient
accuracy and the share of lenient-correct answers that came from the last-integer fallback.
"""

from __future__ import annotations

import numpy as np

from common import arguments, records, save
from mcmc_llm.evaluation.bootstrap import bootstrap_interval, sign_flip_p_value
from mcmc_llm.evaluation.grading import regraded, grading_summary
from mcmc_llm.evaluation.multiplicity import holm_adjust
from mcmc_llm.scripts import script_main
from per_problem import Point, Store

STUDIES = {"primary": ("primary", "primary_pilot"), "multistep": ("multistep", "multistep_pilot")}
CAPS = (192, 240, 288, 336, 384)  # candidate caps: 6 blocks of B = T / 6 each
FINISH_SHARE = 0.90
POWER, LOW = "power", "low_temp"
ARMS = ("greedy", LOW, POWER)
FLIPS, GRADING, LOW_SAMPLES = 200_000, "strict", 16


def finish_shares(recs: list[dict], caps=CAPS) -> dict[int, float]:
    """Share of `recs` that end with EOS within each cap."""
    ends = np.array([r["ended"] for r in recs], dtype=bool)
    lengths = np.array([r["length"] for r in recs])
    return {cap: float(np.mean(ends & (lengths <= cap))) for cap in caps}


def chosen_cap(shares: dict[int, float]) -> int:
    """The smallest cap whose share reaches FINISH_SHARE; if none does, the smallest cap whose share
    is within 0.01 of the highest (a cap that buys no more finished outputs is not worth its cost)."""
    reaching = [cap for cap in sorted(shares) if shares[cap] >= FINISH_SHARE]
    if reaching:
        return reaching[0]
    best = max(shares.values())
    return min(cap for cap, share in shares.items() if share >= best - 0.01)


def pilot(results, study: str = "primary") -> None:
    recs = [r for r in records(results, STUDIES[study][1]) if r["method"] == LOW]
    shares = finish_shares(recs)
    print(f"length pilot: {len(recs)} low-temperature outputs at T_max = 512, "
          f"{len({r['task_id'] for r in recs})} problems")
    for cap, share in shares.items():
        print(f"  T = {cap:>3}: {share:.3f} end with EOS")
    reached = max(shares.values()) >= FINISH_SHARE
    print(f"cap rule: T = {chosen_cap(shares)} (" + (f"the smallest cap with >= {FINISH_SHARE:.0%}" if reached else
          f"no cap reaches {FINISH_SHARE:.0%}: the smallest within 0.01 of the highest share") + ")")


def arm_profile(recs: list[dict], method: str) -> dict[str, float]:
    mine = [r for r in recs if r["method"] == method]
    finished = [r for r in mine if r["ended"]]
    strict_finished = regraded(finished, "strict")
    summary = grading_summary(mine, method)
    return {
        "outputs": len(mine), "ended": len(finished) / len(mine),
        "length": float(np.mean([r["length"] for r in mine])),
        "length_finished": float(np.mean([r["length"] for r in finished])) if finished else float("nan"),
        "strict_finished": float(np.mean([r["passed"] for r in strict_finished])) if finished else float("nan"),
        "strict": summary["strict"], "lenient": summary["lenient"], "fallback": summary["fallback"],
        "tokens_sampled": float(np.mean([r["compute"]["tokens_sampled"] for r in mine])),
    }


def difficulty_of(task_id: str) -> str | None:
    """"2" for "arithmetic/d2/s0/5"; None for another task's id."""
    parts = str(task_id).split("/")
    return parts[1][1:] if len(parts) == 4 and parts[0] == "arithmetic" and parts[1].startswith("d") else None


def by_difficulty(labels: list[str], tasks: list[str], differences: list[np.ndarray]) -> None:
    """Both differences within each arithmetic difficulty (descriptive: estimate and 95% interval)."""
    levels = [difficulty_of(t) for t in tasks]
    if len(set(levels)) < 2:
        return
    print("  by difficulty (descriptive, not tested):")
    for level in sorted(set(levels), key=str):
        mask = np.array([lv == level for lv in levels])
        cells = []
        for label, d in zip(labels, differences):
            ci = bootstrap_interval(d[mask])
            cells.append(f"{label.split(':')[0]} {ci.mean:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]")
        print(f"    difficulty {level} ({int(mask.sum())} problems): " + "; ".join(cells))


def primary(results, out, study: str = "primary") -> None:
    import matplotlib.pyplot as plt

    store = Store(results)
    name = STUDIES[study][0]
    recs = store.raw(name)
    if not recs:
        raise SystemExit(f"{results / (name + '.jsonl')} not found or empty: mcmc-llm run experiments/configs/cpu/{name}.toml")
    power, low = Point(name, POWER), Point(name, LOW)
    matched = round(store.tokens(power) / store.tokens(low))
    clipped = min(max(matched, 1), min(store.samples(low), LOW_SAMPLES))
    tests = [("H1: power - low temperature", power, low),
             (f"H2: power - low temperature majority@{clipped} (equal tokens)", power, Point(name, LOW, "majority", clipped))]
    differences = [store.difference(a, b, GRADING) for _, a, b in tests]
    p_values = [sign_flip_p_value(d, num_resamples=FLIPS) for d in differences]
    adjusted = holm_adjust(p_values)
    problems = len(store.tasks(power))
    print(f"{study} test: {problems} problems, {GRADING} grading; tokens per output: power {store.tokens(power):.1f}, "
          f"low temperature {store.tokens(low):.1f}; matched N = {matched}" + ("" if matched == clipped else f" (clipped to {clipped})"))
    intervals = []
    for (label, _, _), d, p, h in zip(tests, differences, p_values, adjusted):
        ci = bootstrap_interval(d)
        intervals.append(ci)
        verdict = "significant" if h < 0.05 else "not significant"
        print(f"  {label}: {ci.mean:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}], p = {p:.2g}, Holm p = {h:.2g} ({verdict})")
    by_difficulty([label for label, _, _ in tests], store.tasks(power), differences)
    print(f"  {'arm':<10} {'outputs':>7} {'EOS':>6} {'length':>7} {'(finished)':>10} {'strict':>7} {'strict|finished':>15} "
          f"{'lenient':>8} {'fallback':>8} {'tokens/output':>13}")
    for arm in ARMS:
        if any(r["method"] == arm for r in recs):
            a = arm_profile(recs, arm)
            print(f"  {arm:<10} {a['outputs']:>7} {a['ended']:>6.3f} {a['length']:>7.1f} {a['length_finished']:>10.1f} "
                  f"{a['strict']:>7.3f} {a['strict_finished']:>15.3f} {a['lenient']:>8.3f} {a['fallback']:>8.3f} {a['tokens_sampled']:>13.1f}")
    figure, axis = plt.subplots(figsize=(10, 2.6))
    for y, ((label, _, _), ci, h) in enumerate(zip(tests, intervals, adjusted)):
        axis.errorbar([ci.mean], [-y], xerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="o", capsize=3,
                      color="tab:red" if h < 0.05 else "0.4")
        axis.annotate(f"Holm p = {h:.2g}", (ci.high, -y), textcoords="offset points", xytext=(4, -3), fontsize=8)
    axis.axvline(0.0, color="black", linewidth=0.8)
    low, high = min(ci.low for ci in intervals), max(ci.high for ci in intervals)
    span = max(high - low, 0.05)
    axis.set_xlim(low - 0.05 * span, high + 0.3 * span)  # room for the Holm p labels
    axis.set_ylim(-len(tests) + 0.5, 0.5)
    axis.set_yticks([-y for y in range(len(tests))], [t[0] for t in tests], fontsize=8)
    axis.set_xlabel(f"paired difference in {GRADING} accuracy, {problems} problems (95% bootstrap CI)")
    save(figure, out, f"{name}.png")


def main() -> None:
    import sys

    pilot_only = "--pilot" in sys.argv
    if pilot_only:
        sys.argv.remove("--pilot")
    study = "primary"
    if "--study" in sys.argv:
        at = sys.argv.index("--study")
        study = sys.argv[at + 1] if at + 1 < len(sys.argv) else ""
        if study not in STUDIES:
            raise SystemExit(f"primary.py: --study must be one of {sorted(STUDIES)}, got {study!r}")
        del sys.argv[at:at + 2]
    args = arguments(__doc__)
    pilot(args.results, study) if pilot_only else primary(args.results, args.out, study)


if __name__ == "__main__":
    script_main(main)
