"""Figure and numbers of the mixing study on SmolLM2 (experiments/mixing_study.py).

Reads experiments/results/cpu/mixing/{reference,mcmc,mcmc_extra,smc,accuracy}.jsonl and prints every number
docs/results.md quotes; writes paper_figures/out/mixing_study.png (four functionals against tokens
per chain, one line per kernel; the reference as estimated from 4, 8 and 12 runs per problem, to
show how far it drifts; and, for log p, the proven lower bound below).

* A proven lower bound on E_{p^alpha}[log p].  On S_T (sequences ending with EOS within T tokens,
  or reaching T) p sums to 1, so log Z(1) = 0, where Z(a) = sum_x p(x)^a.  log Z is convex in a
  (a log-sum-exp of functions linear in a) with derivative E_{pi_a}[log p], so for alpha > 1

      E_{pi_alpha}[log p] >= (log Z(alpha) - log Z(1)) / (alpha - 1) >= alpha / (alpha - 1) * log p(x)

  for every x in S_T.  Per problem the script takes the x of largest log p found by any run of the
  study (reference particles, chains, SMC draws; outputs outside S_T excluded) and averages over
  problems.  No estimate enters: the bound holds whatever the reference's error (up to the
  bfloat16 rounding of the stored log p).  A kernel whose mean log p is below it is below
  p^alpha by at least the difference.

* Reference E_{p^alpha}[f] per problem: Power-SMC particles of R runs pooled with weights
  Z_hat_r W_r^i (bias O(1/(R P))); its standard error by the jackknife over runs.  The study's
  value is the mean over problems (SE: root sum of squares / problems).
* A kernel at N_MCMC: per problem, the mean of f over its chains; then the mean over problems.
  Bias = kernel - reference; SE = sqrt(SE_kernel^2 + SE_reference^2), SE_kernel from the
  chains' spread within problems.  `*` marks |bias| > z* SE with z* the Bonferroni two-sided
  critical value over every (kernel, N, functional) cell shown (family-wise error 0.05).
* Common random numbers: chain c of problem b has the same streams under every kernel; for the
  pair (uniform, other) the script reports var(paired difference) / (var(a) + var(b)) (below 1:
  the shared streams sharpened the comparison).
* Exact vs published (accuracy.jsonl with mcmc.jsonl at N = 10): paired differences over
  (problem, chain) with a bootstrap over problems (10,000 resamples, seed 0): 95% intervals and
  Bonferroni-adjusted ones over the 12 differences reported.

    python paper_figures/mixing_study.py [--results DIR] [--out PNG]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from statistics import NormalDist

import numpy as np

from mcmc_llm.scripts import script_main

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONALS = {"log_p": "log p", "log_p_per_token": "log p per token", "length": "length", "ended": "EOS rate",
               "correct": "accuracy", "correct_strict": "accuracy (strict)", "modal": "P(modal answer)"}
PLOTTED = ("log_p", "length", "ended", "correct")
KERNEL_ORDER = ("uniform", "within-block", "restart", "priority", "entropy", "published ratio", "published chain")


def load(path: Path) -> list[dict]:
    if not path.exists():
        raise SystemExit(f"{path} not found: run `python experiments/mixing_study.py --phase ...` first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def value(row: dict, name: str, modal: dict) -> float:
    if name == "modal":
        return float(row["answer"] is not None and row["answer"] == modal[row["problem"]])
    return float(row[name])


def reference_estimates(rows: list[dict]) -> tuple[dict, dict]:
    """Per problem {functional: (estimate, SE)}, and each problem's modal answer under the reference."""
    by_problem: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_problem[row["problem"]].append(row)
    modal, estimates = {}, {}
    for problem, particles in sorted(by_problem.items()):
        log_w = np.array([r["log_z_hat"] + r["log_weight"] for r in particles])
        weights = np.exp(log_w - log_w.max())
        runs = np.array([r["run"] for r in particles])
        answers = defaultdict(float)
        for r, w in zip(particles, weights):
            answers[r["answer"]] += w
        modal[problem] = max(answers, key=answers.get)
        estimates[problem] = {}
        for name in FUNCTIONALS:
            f = np.array([value(r, name, modal) for r in particles])
            pooled = float((weights * f).sum() / weights.sum())
            leave_out = [float((weights[runs != k] * f[runs != k]).sum() / weights[runs != k].sum()) for k in np.unique(runs)]
            count = len(leave_out)
            se = float(np.sqrt((count - 1) / count * ((np.array(leave_out) - np.mean(leave_out)) ** 2).sum()))
            estimates[problem][name] = (pooled, se)
    return estimates, modal


def combine(per_problem: dict[int, tuple[float, float]]) -> tuple[float, float]:
    values = np.array([v for v, _ in per_problem.values()])
    errors = np.array([e for _, e in per_problem.values()])
    return float(values.mean()), float(np.sqrt((errors ** 2).sum()) / len(values))


def chain_estimates(rows: list[dict], name: str, modal: dict) -> tuple[float, float]:
    """Mean over problems of the chains' mean, with its SE from the within-problem spread."""
    by_problem: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        by_problem[row["problem"]].append(value(row, name, modal))
    per_problem = {p: (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0)
                   for p, v in by_problem.items()}
    return combine(per_problem)


def reference_stability(rows: list[dict]) -> dict[int, dict]:
    """The study-level reference from the first k batches of runs (k = 1, 2, ...): how far a new
    batch moves it, against its SE (the jackknife does not see modes no run has found)."""
    batches = sorted({row.get("batch", 0) for row in rows})
    out = {}
    for k in batches:
        kept = [row for row in rows if row.get("batch", 0) <= k]
        estimates, _ = reference_estimates(kept)
        out[k + 1] = {name: combine({p: estimates[p][name] for p in estimates}) for name in FUNCTIONALS}
        out[k + 1]["runs"] = len({(row["problem"], row["run"]) for row in kept})
    return out


ALPHA = 4.0  # the study's alpha (experiments/mixing_study.py)


def in_support(row: dict) -> bool:
    """Whether the row's output is in S_T: it ends with EOS or reaches the cap."""
    return bool(row["ended"]) or row["length"] >= MAX_NEW_TOKENS


def log_p_lower_bound(rows: list[dict], alpha: float = ALPHA) -> tuple[float, dict[int, float]]:
    """alpha / (alpha - 1) * the largest log p found per problem (module docstring), and its mean."""
    best: dict[int, float] = {}
    for row in rows:
        if in_support(row):
            best[row["problem"]] = max(best.get(row["problem"], -np.inf), float(row["log_p"]))
    bounds = {problem: alpha / (alpha - 1.0) * value for problem, value in best.items()}
    return float(np.mean(list(bounds.values()))), bounds


def absolute(entry: dict, reference: dict, name: str) -> float:
    """A cell's mean (its bias plus the reference it was taken against)."""
    return entry[name][0] + reference[name][0]


def study(results: Path) -> dict:
    reference_rows = load(results / "reference.jsonl")
    estimates, modal = reference_estimates(reference_rows)
    problems = sorted(estimates)
    reference = {name: combine({p: estimates[p][name] for p in problems}) for name in FUNCTIONALS}
    extra = results / "mcmc_extra.jsonl"
    mcmc = [r for r in load(results / "mcmc.jsonl") + (load(extra) if extra.exists() else []) if r["problem"] in estimates]
    cells = defaultdict(list)
    for row in mcmc:
        cells[(row["kernel"], row["mcmc_steps"])].append(row)
    table = {}
    for (kernel, steps), rows in cells.items():
        entry = {"tokens": float(np.mean([r["tokens_sampled"] for r in rows])), "chains": len(rows), "own_se": {}}
        for name in FUNCTIONALS:
            mean, se = chain_estimates(rows, name, modal)
            entry[name] = (mean - reference[name][0], float(np.hypot(se, reference[name][1])))
            entry["own_se"][name] = se
        table[(kernel, steps)] = entry
    smc_path = results / "smc.jsonl"
    smc = {}
    if smc_path.exists():
        by_particles = defaultdict(list)
        for row in load(smc_path):
            by_particles[row["particles"]].append(row)
        for particles, rows in by_particles.items():
            draws = [{**r["draw"], "problem": r["problem"]} for r in rows]
            entry = {"tokens": float(np.mean([r["tokens_sampled"] for r in rows])), "chains": len(rows), "own_se": {}}
            for name in FUNCTIONALS:
                mean, se = chain_estimates(draws, name, modal)
                entry[name] = (mean - reference[name][0], float(np.hypot(se, reference[name][1])))
                entry["own_se"][name] = se
            smc[particles] = entry
    crn = common_random_numbers(cells, modal)
    found = reference_rows + mcmc + [{**r["draw"], "problem": r["problem"]} for r in (load(smc_path) if smc_path.exists() else [])]
    if (results / "accuracy.jsonl").exists():
        found += load(results / "accuracy.jsonl")
    bound, _ = log_p_lower_bound([r for r in found if r["problem"] in estimates])
    return {"reference": reference, "table": table, "smc": smc, "crn": crn, "problems": problems, "modal": modal,
            "stability": reference_stability(reference_rows), "log_p_bound": bound}


def common_random_numbers(cells, modal) -> dict:
    """var(paired difference) / (var(a) + var(b)) of log p, uniform against each kernel."""
    ratios = {}
    for (kernel, steps), rows in cells.items():
        if kernel == "uniform" or ("uniform", steps) not in cells:
            continue
        base = {(r["problem"], r["chain"]): r["log_p"] for r in cells[("uniform", steps)]}
        pairs = [(base[(r["problem"], r["chain"])], r["log_p"]) for r in rows if (r["problem"], r["chain"]) in base]
        a, b = np.array(pairs).T
        ratios[(kernel, steps)] = float(np.var(a - b, ddof=1) / (np.var(a, ddof=1) + np.var(b, ddof=1)))
    return ratios


#: Functionals of the exact-against-published comparison; `outside`: unterminated and shorter
#: than the cap (outside S_T, reachable only by the published chain).
COMPARED = ("correct", "correct_strict", "length", "ended", "outside", "log_p")
MAX_NEW_TOKENS = 48  # the study's T (experiments/mixing_study.py)


def compared(row: dict, name: str) -> float:
    if name == "outside":
        return float(not row["ended"] and row["length"] < MAX_NEW_TOKENS)
    return float(row[name])


def accuracy_comparison(results: Path) -> dict:
    """Exact (uniform) against the published ratio and the published chain at N = 10, paired."""
    rows = [r for r in load(results / "mcmc.jsonl") if r["mcmc_steps"] == 10]
    if (results / "accuracy.jsonl").exists():
        rows += load(results / "accuracy.jsonl")
    by_kernel = defaultdict(dict)
    for r in rows:
        by_kernel[r["kernel"]][(r["problem"], r["chain"])] = r
    out = {}
    rng = np.random.default_rng(0)
    for other in ("published ratio", "published chain"):
        keys = sorted(set(by_kernel["uniform"]) & set(by_kernel[other]))
        problems = sorted({k[0] for k in keys})
        if not keys:
            continue
        entry = {"pairs": len(keys), "problems": len(problems)}
        for name in COMPARED:
            diffs = defaultdict(list)
            for key in keys:
                diffs[key[0]].append(compared(by_kernel[other][key], name) - compared(by_kernel["uniform"][key], name))
            totals = np.array([sum(diffs[p]) for p in problems])
            counts = np.array([len(diffs[p]) for p in problems])
            estimate = totals.sum() / counts.sum()
            picks = rng.integers(0, len(problems), size=(10_000, len(problems)))
            boot = totals[picks].sum(1) / counts[picks].sum(1)
            means = {k: float(np.mean([compared(by_kernel[k][key], name) for key in keys])) for k in ("uniform", other)}
            level = 0.05 / (2 * len(COMPARED))  # Bonferroni over the two comparisons' functionals
            entry[name] = {"exact": means["uniform"], other: means[other], "difference": float(estimate),
                           "interval": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
                           "adjusted": [float(np.quantile(boot, level / 2)), float(np.quantile(boot, 1 - level / 2))]}
        out[other] = entry
    return out


def report(result: dict, comparison: dict) -> None:
    reference, table = result["reference"], result["table"]
    print(f"reference (Power-SMC, {len(result['problems'])} problems):")
    for name, label in FUNCTIONALS.items():
        print(f"  {label:>20}: {reference[name][0]:8.4f} +- {reference[name][1]:.4f}")
    print("reference from the first k batches of runs (estimate +- SE):")
    for k, entry in result["stability"].items():
        print(f"  k={k} ({entry['runs']} runs): " + ", ".join(
            f"{FUNCTIONALS[n]} {entry[n][0]:.3f} +- {entry[n][1]:.3f}" for n in ("log_p", "length", "ended", "correct")))
    cells = (len(table) + len(result["smc"])) * len(FUNCTIONALS)
    critical = NormalDist().inv_cdf(1 - 0.025 / max(cells, 1))
    print(f"bias against the reference (value, SE); * |bias| > {critical:.2f} SE (Bonferroni over {cells} cells)")
    header = "".join(f"{label:>22}" for label in FUNCTIONALS.values())
    print(f"{'kernel':>16} {'N':>3} {'tokens':>7}{header}")
    for kernel in KERNEL_ORDER:
        for steps in sorted(s for k, s in table if k == kernel):
            entry = table[(kernel, steps)]
            cells_text = "".join(
                f"{entry[n][0]:>+13.3f} ({entry[n][1]:.3f}){'*' if abs(entry[n][0]) > critical * entry[n][1] else ' '}"
                for n in FUNCTIONALS)
            print(f"{kernel:>16} {steps:>3} {entry['tokens']:>7.0f}{cells_text}")
    for particles, entry in sorted(result["smc"].items()):
        cells_text = "".join(
            f"{entry[n][0]:>+13.3f} ({entry[n][1]:.3f}){'*' if abs(entry[n][0]) > critical * entry[n][1] else ' '}"
            for n in FUNCTIONALS)
        print(f"{'SMC P=' + str(particles):>16} {'-':>3} {entry['tokens']:>7.0f}{cells_text}")
    bound = result["log_p_bound"]
    print(f"proven lower bound on E_p^alpha[log p] (alpha/(alpha-1) x the best log p found, mean over problems): {bound:.3f}")
    print("  kernel mean log p minus the bound (+- SE of the kernel's mean; below 0 = below p^alpha by at least that):")
    for kernel in KERNEL_ORDER:
        for steps in sorted(s for k, s in table if k == kernel):
            gap = absolute(table[(kernel, steps)], reference, "log_p") - bound
            se = table[(kernel, steps)]["own_se"]["log_p"]
            print(f"    {kernel:>16} N={steps:<3}: {gap:+.3f} +- {se:.3f} (z = {gap / se:+.1f})")
    print("common random numbers, log p: var(paired diff) / (var(a) + var(b)), uniform vs kernel")
    for (kernel, steps), ratio in sorted(result["crn"].items(), key=lambda item: (item[0][1], item[0][0])):
        print(f"  N={steps:<3} {kernel:>16}: {ratio:.2f}")
    for other, entry in comparison.items():
        print(f"exact (uniform) vs {other}, N = 10, {entry['pairs']} paired chains over {entry['problems']} problems:")
        for name in COMPARED:
            e = entry[name]
            print(f"  {name:>15}: exact {e['exact']:8.3f}  {other} {e[other]:8.3f}  difference {e['difference']:+.3f} "
                  f"95% [{e['interval'][0]:+.3f}, {e['interval'][1]:+.3f}]  Bonferroni over {2 * len(COMPARED)} "
                  f"[{e['adjusted'][0]:+.3f}, {e['adjusted'][1]:+.3f}]")


def plot(result: dict, out: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, reference = result["table"], result["reference"]
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    colors = dict(zip(KERNEL_ORDER, plt.get_cmap("tab10").colors))
    drift = plt.get_cmap("Greys")
    runs = sorted(result["stability"])
    for axis, name in zip(axes.flat, PLOTTED):
        for k in runs:  # the reference as more runs were added: its drift, which its SE does not cover
            level = result["stability"][k][name][0]
            axis.axhline(level, color=drift(0.35 + 0.6 * k / len(runs)), linestyle="--", linewidth=1.2,
                         label=f"reference, {result['stability'][k]['runs'] // len(result['problems'])} runs per problem")
        if name == "log_p":
            axis.axhline(result["log_p_bound"], color="tab:red", linewidth=1.5,
                         label="proven: E_p^alpha[log p] is above this line")
        for offset, kernel in enumerate(KERNEL_ORDER):
            steps = sorted(s for k, s in table if k == kernel)
            if not steps:
                continue
            tokens = np.array([table[(kernel, s)]["tokens"] for s in steps]) * (1 + 0.02 * (offset - 3))
            means = np.array([absolute(table[(kernel, s)], reference, name) for s in steps])
            error = np.array([2 * table[(kernel, s)]["own_se"][name] for s in steps])
            axis.errorbar(tokens, means, yerr=error, marker="o", markersize=4, capsize=2, color=colors[kernel], label=kernel)
        for particles, entry in sorted(result["smc"].items()):
            axis.errorbar([entry["tokens"]], [absolute(entry, reference, name)], yerr=[2 * entry["own_se"][name]], marker="s",
                          color="k", linestyle="none", capsize=2, alpha=0.4 + 0.3 * (particles > 4),
                          label=f"Power-SMC, P={particles}")
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("tokens sampled per chain (per run for SMC)")
        axis.set_ylabel(f"mean {FUNCTIONALS[name]} (error bars: 2 SE)")
        axis.set_title(FUNCTIONALS[name])
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize=8)
    figure.suptitle("Block MH against p^alpha, SmolLM2-135M, alpha=4, T=48, B=16; N_MCMC = 1, 3, 10, 32\n"
                    "dashed: the Power-SMC reference from 4, 8, 12 runs per problem (it drifts); red: a proven lower bound")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "experiments" / "results" / "cpu" / "mixing")
    parser.add_argument("--out", type=Path, default=ROOT / "paper_figures" / "out" / "mixing_study.png")
    args = parser.parse_args()
    result = study(args.results)
    comparison = accuracy_comparison(args.results)
    report(result, comparison)
    plot(result, args.out)


if __name__ == "__main__":
    script_main(main)
