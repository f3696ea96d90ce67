"""Your own cut rule and your own suffix proposal, run in both drivers and checked against exact laws.

A script to copy: it uses only public names of the library and monkeypatches nothing.  The how-to
that walks through it is docs/howto_custom_kernels.md.

Target: pi(x) ∝ p(x)^alpha on S_N for the "trigram" toy LM after the prompt (2, 1), with N = 4,
alpha = 3 and blocks of B = 2 (Algorithm 1, two stages).  Under this prompt the first generated
token matters: its marginal under pi differs from its marginal under temperature-1/alpha sampling
by TV 0.24 (with an empty prompt by 0.0015, which no check with a few thousand chains can see).

Written here:

* `LateHalfCut`, a cut rule: m uniform on the second half of the sequence, floor(L/2) <= m < L.
  Exact as an MH move (the reverse law P(m | x') is evaluated at the proposal), but NOT
  irreducible: a cut at m = 0 needs L = 1, i.e. x = (EOS), from which every move with L' > 1 is
  impossible to reverse and is rejected.  So the first generated token never changes after the
  first extension, and the chain converges to p_temp(x_1) pi(x_2.. | x_1), not to pi.
* `DraftRevisionProposal`, a two-phase suffix proposal written from scratch (plan / complete):
  a cut inside the current block resamples with the target's LM at temperature 1/alpha; a cut in
  an earlier block ("a revision") resamples with a second, cheaper draft LM over the same
  vocabulary.  The sampler is a function of the cut, which the reverse move shares, so the move is
  exact; the draft's tokens are re-scored under the target's LM for pi(x').

Kernels checked (each in both drivers, `batching="lockstep"` and `"continuous"`):

* late-half + restart: `MixtureProposal` of `LateHalfCut` moves (weight 3/4) and built-in restarts
  (1/4): the restarts make it irreducible, so it must reach pi;
* draft revisions: `DraftRevisionProposal` with uniform cuts: must reach pi;
* control, late-half alone: `PowerSamplerConfig(cut_rule=LateHalfCut())`: must be REJECTED.

The final sequences of the independent chains are compared with the exact `power_law` by a
chi-square test and a total-variation test, each at false-failure rate 1e-4 (`mcmc_llm.testing`);
a kernel is ok when both pass in both drivers.  Every run uses the same seed: chain c draws the
same numbers in every run (common random numbers), and the two drivers give identical chains.

    python experiments/custom_kernel.py                  # ~6000 chains x 40 steps per run
    python experiments/custom_kernel.py --chains 1000 --steps 15

The last line printed is JSON, {"kernels": {name: {"tv", "threshold", "ok", ...}}, "controls":
{...}}; the exit code is 0 when every kernel is ok and every control is rejected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
import torch

from mcmc_llm import PowerSamplerConfig, power_sample
from mcmc_llm.core.protocols import Move, Sampler
from mcmc_llm.core.tree import gather_chains
from mcmc_llm.drivers.power import Stage
from mcmc_llm.lm.exact import power_law, tempered_law
from mcmc_llm.lm.generation import SamplingRule, score_continuations
from mcmc_llm.lm.toy import NgramLM, load_toy
from mcmc_llm.proposals.cut_rules import CutRuleBase, RestartCut, UniformCut, normalised, positions_allowed
from mcmc_llm.proposals.mixture import MixtureProposal
from mcmc_llm.proposals.suffix import SuffixResampling, suffix_log_q
from mcmc_llm.testing import chi_square_check, counts_from_samples, total_variation_check

MODEL, PROMPT, N, ALPHA, BLOCK = "trigram", (2, 1), 4, 3.0, 2
FALSE_FAILURE_RATE = 1e-4  # per check; a kernel runs 2 checks x 2 drivers


# ------------------------------------------------------------------------------------ a cut rule
@dataclasses.dataclass(frozen=True, repr=False)
class LateHalfCut(CutRuleBase):
    """P(m | x) = 1 / (L - floor(L/2)) for floor(L/2) <= m < L: cut only in the second half.

    `log_probs` is the whole rule: [C, capacity] log-probabilities, -inf where m is not allowed
    (`CutRuleBase` derives `sample` and `expected_resampled` from it).  It reads x only through its
    length, and says so: the continuous driver may then draw the next step's cut before it knows
    whether the current step is accepted."""

    name = "late-half"
    reads_lengths_only = True

    def log_probs(self, position, block_start):
        m = torch.arange(position.capacity, device=position.tokens.device)[None]
        allowed = positions_allowed(position) & (m >= (position.lengths // 2)[:, None])
        return normalised(torch.zeros_like(position.log_q), allowed)


# ------------------------------------------------------------------------------------ a proposal
@dataclasses.dataclass(frozen=True)
class DraftPlan:
    """What `DraftRevisionProposal.plan` returns: the four fields every plan has (the driver reads
    them), then the proposal's own.  Every tensor is [C, ...], so drivers can gather and scatter
    plans by chain."""

    cut_index: torch.Tensor  # keep x_<m
    max_new_tokens: torch.Tensor  # at most this many new tokens (0: the identity move)
    sampler_index: torch.Tensor  # 0: the target's LM at 1/alpha, 1: the draft LM
    samplers: tuple
    log_cut: torch.Tensor  # log P(m | x), [C, capacity]
    movable: torch.Tensor  # False where no cut is allowed


class DraftRevisionProposal:
    """Suffix resampling whose sampler depends on the cut: cuts in the current block (m >=
    `stage.block_start`) resample from `lm` at temperature 1/alpha, cuts in earlier blocks from
    `draft_lm` at `draft_temperature`.

    Exactness: with the cut m an auxiliary variable that the reverse move reuses, and the sampler
    s(m) a function of m (shared by x and x'),

        log q(x' | x) = log P(m | x)  + sum_{t=m}^{L'-1} log p_s(m)(x'_t | x'_<t)
        log q(x | x') = log P(m | x') + sum_{t=m}^{L-1}  log p_s(m)(x_t  | x_<t)

    The backward sum must be under s(m) whatever drew x's suffix (an extension, the other sampler,
    another kernel of a mixture): `suffix_log_q` re-scores it when the cached law differs."""

    def __init__(self, lm, draft_lm, stage: Stage, *, alpha: float, draft_temperature: float = 1.0, cut_rule=UniformCut()):
        if draft_lm.vocab_size != lm.vocab_size or tuple(draft_lm.eos_token_ids) != tuple(lm.eos_token_ids):
            raise ValueError("the draft LM must share the target LM's vocabulary and EOS tokens")
        self.lm, self.cut_rule = lm, cut_rule
        self.cap, self.block_start = stage.cap, stage.block_start
        self.samplers = (Sampler(lm, SamplingRule(1.0 / alpha)), Sampler(draft_lm, SamplingRule(draft_temperature)))

    @property
    def reads_lengths_only(self) -> bool:
        # The plan reads x through the cut rule only (the sampler is a function of the cut).
        return bool(self.cut_rule.reads_lengths_only)

    def plan(self, source, position) -> DraftPlan:
        """Phase 1: draw every chain's cut from `source` (its own stream) and say what to generate."""
        cut, log_cut = self.cut_rule.sample(source, position, self.block_start)
        movable = torch.isfinite(log_cut).any(-1)
        cut = torch.where(movable, cut, position.lengths)
        budget = torch.where(movable, self.cap - cut, torch.zeros_like(cut))
        sampler_index = (cut < self.block_start).long()
        return DraftPlan(cut, budget, sampler_index, self.samplers, log_cut, movable)

    def complete(self, position, plan: DraftPlan, continuation) -> Move:
        """Phase 3: the driver generated `continuation` (row c from prompt + x_<m with
        `plan.samplers[plan.sampler_index[c]]`); build x' and both log q terms."""
        cut = plan.cut_index
        drafted = (plan.sampler_index == 1).nonzero().squeeze(-1)
        if drafted.numel():  # the position caches log p under the target's LM: re-score the draft's tokens
            contexts = gather_chains(position.contexts(cut), drafted)
            rescored = score_continuations(self.lm, contexts, gather_chains(continuation.tokens, drafted), self.samplers[0].rule)
            log_p, entropy = continuation.log_p.clone(), continuation.entropy.clone()
            width = rescored.log_p.shape[1]
            log_p[drafted, :width], entropy[drafted, :width] = rescored.log_p.to(log_p), rescored.entropy.to(entropy)
            continuation = dataclasses.replace(continuation, log_p=log_p, entropy=entropy)
        proposed = position.splice(cut, continuation)  # its log_q: under the sampler that drew each token
        at = cut.clamp(max=position.capacity - 1)[:, None]
        forward = plan.log_cut.gather(1, at).squeeze(1) + proposed.suffix_sum(proposed.log_q, cut)
        reverse_cut = self.cut_rule.log_probs(proposed, self.block_start).gather(1, at).squeeze(1)  # P(m | x')
        backward = reverse_cut + self._suffix_log_q(position, cut, plan.sampler_index)
        zero = torch.zeros_like(forward)
        details = {"cut_index": cut, "drafted": plan.sampler_index, "tokens_resampled": continuation.tokens.lengths}
        return Move(proposed, torch.where(plan.movable, forward, zero), torch.where(plan.movable, backward, zero), details)

    def _suffix_log_q(self, position, cut, sampler_index):
        total = torch.zeros(position.num_chains, dtype=torch.float64, device=position.log_q.device)
        for index, sampler in enumerate(self.samplers):
            rows = (sampler_index == index).nonzero().squeeze(-1)
            if rows.numel():
                total[rows] = suffix_log_q(gather_chains(position, rows), cut[rows], sampler).to(total)
        return total


# ------------------------------------------------------------------------------------ the kernels
def kernels(lm, draft_lm):
    """name -> (cut rule for the config, proposal factory Stage -> SuffixProposal or None, must pass)."""
    rule = SamplingRule(1.0 / ALPHA)

    def late_half_and_restart(stage: Stage):
        options = dict(block_start=stage.block_start)
        return MixtureProposal(
            [SuffixResampling(lm, rule, LateHalfCut(), stage.cap, **options), SuffixResampling(lm, rule, RestartCut(), stage.cap, **options)],
            [0.75, 0.25],
        )

    def draft_revisions(stage: Stage):
        return DraftRevisionProposal(lm, draft_lm, stage, alpha=ALPHA)

    return {
        "late-half + restart": ("uniform", late_half_and_restart, True),
        "draft revisions": ("uniform", draft_revisions, True),
        "late-half alone (control)": (LateHalfCut(), None, False),  # a cut rule object in the config
    }


def control_limit(lm) -> np.ndarray:
    """The law late-half cuts alone converge to: the first token as the first extension drew it
    (temperature 1/alpha), the rest from pi given it.  Over `power_law(...).sequences`."""
    target, tempered = power_law(lm, N, ALPHA, PROMPT), tempered_law(lm, N, 1.0 / ALPHA, PROMPT)
    first = np.array([s[0] for s in target.sequences])
    pi, temp = target.probs(), tempered.probs()
    out = np.zeros_like(pi)
    for token in np.unique(first):
        mask = first == token
        out[mask] = temp[mask].sum() * pi[mask] / pi[mask].sum()
    return out


def run_kernel(lm, law, cut_rule, proposal, batching, chains, steps, seed):
    config = PowerSamplerConfig(alpha=ALPHA, block_size=BLOCK, max_new_tokens=N, mcmc_steps=steps, cut_rule=cut_rule, batching=batching)
    result = power_sample(lm, [list(PROMPT)], config, chains_per_prompt=chains, seed=seed, proposal=proposal)
    sequences = [tuple(s) for s in result.sequences()]
    counts = counts_from_samples(sequences, law.sequences)
    chi2 = chi_square_check(counts, law.probs(), FALSE_FAILURE_RATE)
    tv = total_variation_check(counts, law.probs(), FALSE_FAILURE_RATE)
    return sequences, counts, chi2, tv, result.trace.acceptance_rate()


def main(chains: int = 6000, steps: int = 40, seed: int = 0, out=sys.stdout) -> dict:
    """Run every kernel in both drivers; print the table; return the JSON summary."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    lm = load_toy(MODEL)
    draft_lm = NgramLM.random(lm.vocab_size, 2, seed=7, eos_logit=-1.0)  # a cruder bigram over the same 4 tokens
    law = power_law(lm, N, ALPHA, PROMPT)
    print(f"target: p^{ALPHA:g} of toy:{MODEL} after prompt {PROMPT} on S_{N} ({len(law)} sequences), blocks of {BLOCK}; "
          f"{chains} chains x {steps} MH steps per stage, seed {seed}; false-failure rate {FALSE_FAILURE_RATE:g} per check", file=out)
    header = f"{'kernel':<27} {'driver':<11} {'accept':>6} {'TV':>7} {'thresh':>7} {'chi2 p':>9}  verdict"
    print(header, file=out)
    print("-" * len(header), file=out)
    summary = {"kernels": {}, "controls": {}}
    for name, (cut_rule, proposal, must_pass) in kernels(lm, draft_lm).items():
        runs = {}
        for batching in ("lockstep", "continuous"):
            start = time.perf_counter()
            runs[batching] = run_kernel(lm, law, cut_rule, proposal, batching, chains, steps, seed)
            _, _, chi2, tv, acceptance = runs[batching]
            verdict = "pass" if chi2.passed and tv.passed else "REJECTED"
            print(f"{name:<27} {batching:<11} {acceptance:>6.3f} {tv.statistic:>7.4f} {tv.threshold:>7.4f} {chi2.p_value:>9.2e}  "
                  f"{verdict} ({time.perf_counter() - start:.1f} s)", file=out)
        checks = [(run[2], run[3]) for run in runs.values()]
        ok = all(chi2.passed and tv.passed for chi2, tv in checks)
        entry = {
            "tv": round(max(tv.statistic for _, tv in checks), 5),
            "threshold": round(min(tv.threshold for _, tv in checks), 5),
            "ok": ok,
            "chi2_p": float(f"{min(chi2.p_value for chi2, _ in checks):.3g}"),
            "drivers_identical": runs["lockstep"][0] == runs["continuous"][0],
        }
        if must_pass:
            summary["kernels"][name] = entry
        else:
            entry["rejected"] = not ok
            limit = control_limit(lm)
            expected = chi_square_check(runs["lockstep"][1], limit, FALSE_FAILURE_RATE)
            entry["tv_to_predicted_limit"] = round(expected.total_variation, 5)
            print(f"  {name} against its predicted limit p_temp(x_1) pi(x_2.. | x_1) (TV {0.5 * np.abs(limit - law.probs()).sum():.3f} "
                  f"from p^alpha): TV {expected.total_variation:.4f}, chi2 p {expected.p_value:.2e}", file=out)
            summary["controls"][name] = entry
    identical = all(entry["drivers_identical"] for group in summary.values() for entry in group.values())
    print(f"lock-step and continuous drivers gave identical chains for every kernel: {identical}", file=out)
    return summary


def all_as_expected(summary: dict) -> bool:
    """Every kernel passed and every control was rejected."""
    return all(e["ok"] for e in summary["kernels"].values()) and all(e["rejected"] for e in summary["controls"].values())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=6000, help="independent chains per run (default 6000)")
    parser.add_argument("--steps", type=int, default=40, help="MH steps per stage (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    summary = main(args.chains, args.steps, args.seed)
    print(json.dumps(summary))
    sys.exit(0 if all_as_expected(summary) else 1)
