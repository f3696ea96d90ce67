"""Your own cut rule and your own suffix proposal, run in both drivers and checked against exact laws.

A script to copy: it uses only public names of the library and monkeypatches nothing.  The how-to
that walks through it is docs/howto_custom_kernels.md.

Target: pi(x) ∝ p(x)^alpha on S_N for the "trigram" toy LM (empty prompt), with N = 4, alpha = 3
and blocks of B = 2 (Algorithm 1, two stages).  The proposal LM is the base model at temperature 1
(`proposal_temperature=1.0`), not the paper's 1/alpha: the control below freezes the first token
at its law under the first extension, which at temperature 1 is TV 0.216 away from pi's, but at
temperature 1/alpha only 0.0015 away (no check with a few thousand chains can see that).  A check
that passes is evidence, not proof: reason about irreducibility too.

Written here:

* `LateHalfCut`, a cut rule: m uniform on the second half of the sequence, floor(L/2) <= m < L.
  Exact as an MH move (the reverse law P(m | x') is evaluated at the proposal), but NOT
  irreducible: a cut at m = 0 needs L = 1, i.e. x = (EOS), from which every move with L' > 1 is
  impossible to reverse and is rejected.  So the first generated token never changes after the
  first extension, and the chain converges to p_prop(x_1) pi(x_2.. | x_1), not to pi.
* `DraftRevisionProposal`, a two-phase suffix proposal on `TwoPhaseSuffixProposal` (which writes
  plan / complete): a cut inside the current block resamples with the target's LM; a cut in an
  earlier block ("a revision", the long suffixes) resamples with a second, cheaper draft LM over
  the same vocabulary (here a bigram that forgets the older of the trigram's two context tokens).
  The sampler is a function of the cut, which the reverse move shares, so the move is exact; the
  draft's tokens are re-scored under the target's LM for pi(x').

Kernels checked:

* late-half + restart: `MixtureProposal` of `LateHalfCut` moves (weight 3/4) and built-in restarts
  (1/4): the restarts make it irreducible, so it must reach pi;
* draft revisions: `DraftRevisionProposal` with uniform cuts: must reach pi;
* control "late-half alone", `PowerSamplerConfig(cut_rule=LateHalfCut())`: leaves pi invariant
  but is not irreducible; must be REJECTED by the sampling check (and pass the invariance check);
* control "stale backward": `DraftRevisionProposal` with the backward term from the cached
  `log_q` (whatever law drew the tokens) instead of the reverse move's own law; must be REJECTED.

Every kernel goes through `mcmc_llm.testing.check_kernel` (each check with false-failure rate 1e-4,
each reporting the smallest TV from pi it detects with probability 0.9):

1. invariance (`conservation_check`): 20,000 chains started at exact draws of pi take two steps of
   the last stage's kernel (`MetropolisHastings` around the proposal, outside any driver); their
   law must still be pi.  This tests the ratio alone, whatever the mixing.
2. sampling: Algorithm 1 (`power_sample`) with 6000 independent chains x 60 MH steps per stage, in
   both drivers (`batching="lockstep"` and `"continuous"`, pre-fetching on); the final sequences
   against the exact `power_law` by a chi-square and a total-variation test.  This tests
   invariance and mixing together.
3. the two drivers must give identical chains.

A kernel is ok when every check passes.  Every run uses the same seed: chain c draws the same
numbers in every run (common random numbers).

    python experiments/custom_kernel.py                  # 6000 chains x 60 MH steps per stage, per run
    python experiments/custom_kernel.py --chains 1000 --steps 30 --conservation-chains 4000

The last line printed is JSON, {"kernels": {name: {"tv", "threshold", "ok", "min_detectable_tv", ...}},
"controls": {...}}; the exit code is 0 when every kernel is ok and every control is rejected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import torch

from mcmc_llm.authoring import (
    CutRuleBase, MixtureProposal, RestartCut, Sampler, SamplingRule, Stage, SuffixResampling, TwoPhaseSuffixProposal, UniformCut,
    check_kernel, load_toy, normalised, positions_allowed, power_law,
)
from mcmc_llm.lm.exact import tempered_law
from mcmc_llm.lm.toy import NgramLM
from mcmc_llm.testing import chi_square_check, counts_from_samples

MODEL, PROMPT, N, ALPHA, BLOCK, TEMPERATURE = "trigram", (), 4, 3.0, 2, 1.0
FALSE_FAILURE_RATE = 1e-4  # per check; a kernel runs 5 (invariance, then chi-square and TV in each driver)
SETTINGS = dict(prompt=PROMPT, max_new_tokens=N, alpha=ALPHA, block_size=BLOCK, temperature=TEMPERATURE,
                false_failure_rate=FALSE_FAILURE_RATE)


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
class DraftRevisionProposal(TwoPhaseSuffixProposal):
    """Suffix resampling whose sampler depends on the cut: cuts in the current block (m >=
    `stage.block_start`) resample from `lm` (sampler 0), cuts in earlier blocks from `draft_lm`
    (sampler 1), each with its own temperature.

    Exactness: with the cut m an auxiliary variable that the reverse move reuses, and the sampler
    s(m) a function of m (shared by x and x'),

        log q(x' | x) = log P(m | x)  + sum_{t=m}^{L'-1} log p_s(m)(x'_t | x'_<t)
        log q(x | x') = log P(m | x') + sum_{t=m}^{L-1}  log p_s(m)(x_t  | x_<t)

    `TwoPhaseSuffixProposal` computes both (the backward sum under s(m) whatever drew x's suffix,
    the draft's tokens re-scored under `lm` for pi(x')); this class only says which sampler."""

    def __init__(self, lm, draft_lm, stage: Stage, *, temperature: float, draft_temperature: float, cut_rule=UniformCut()):
        samplers = (Sampler(lm, SamplingRule(temperature)), Sampler(draft_lm, SamplingRule(draft_temperature)))
        super().__init__(lm, samplers, cut_rule, stage.cap, block_start=stage.block_start)

    def sampler_for(self, cut_index):
        return (cut_index < self.block_start).long()  # 1: a revision of an earlier block, by the draft


class StaleBackward(DraftRevisionProposal):
    """A deliberately WRONG variant (a control): the backward term from the position's cached
    `log_q`, i.e. under whichever law drew each token of x's suffix, instead of re-scoring it
    under the sampler the reverse move would use.  The check must reject it."""

    def under_samplers(self, position, plan):
        return position


# ------------------------------------------------------------------------------------ the kernels
def kernels(lm, draft_lm) -> dict:
    """name -> (what `check_kernel` takes: a proposal factory `Stage -> proposal` or a cut rule for
    the config, whether it must reach pi)."""
    rule = SamplingRule(TEMPERATURE)

    def late_half_and_restart(stage: Stage):
        options = dict(block_start=stage.block_start)
        return MixtureProposal(
            [SuffixResampling(lm, rule, LateHalfCut(), stage.cap, **options), SuffixResampling(lm, rule, RestartCut(), stage.cap, **options)],
            [0.75, 0.25],
        )

    def draft_revisions(stage: Stage):
        return DraftRevisionProposal(lm, draft_lm, stage, temperature=TEMPERATURE, draft_temperature=TEMPERATURE)

    def stale_backward(stage: Stage):
        return StaleBackward(lm, draft_lm, stage, temperature=TEMPERATURE, draft_temperature=TEMPERATURE)

    return {
        "late-half + restart": (late_half_and_restart, True),
        "draft revisions": (draft_revisions, True),
        "late-half alone (control)": (LateHalfCut(), False),  # a cut rule object straight into the config
        "stale backward (control)": (stale_backward, False),
    }


def draft_model(lm) -> NgramLM:
    """A cheaper, cruder draft of the trigram `lm`: a bigram that forgets the older context token,
    p_draft(x_t | x_t-1) = mean over a of p(x_t | a, x_t-1) (the first token's law is the trigram's)."""
    vocab = lm.vocab_size
    table = lm.log_table.exp().reshape(vocab + 1, vocab + 1, vocab)  # [older, newer, next]; index vocab = start
    bigram = table[:vocab].mean(0)
    bigram[vocab] = table[vocab, vocab]
    return NgramLM(torch.log(bigram), order=2, eos_token_ids=lm.eos_token_ids)


def control_limit(lm) -> np.ndarray:
    """The law late-half cuts alone converge to: the first token as the first extension drew it
    (p_prop), the rest from pi given it.  Over `power_law(...).sequences`."""
    target, proposal = power_law(lm, N, ALPHA, PROMPT), tempered_law(lm, N, TEMPERATURE, PROMPT)
    first = np.array([s[0] for s in target.sequences])
    pi, prop = target.probs(), proposal.probs()
    out = np.zeros_like(pi)
    for token in np.unique(first):
        mask = first == token
        out[mask] = prop[mask].sum() * pi[mask] / pi[mask].sum()
    return out


# ------------------------------------------------------------------------------------ the checks
def summary_entry(result) -> dict:
    """The JSON line's entry for one kernel's `KernelCheckResult`."""
    runs = result.sampling.values()
    return {
        "tv": round(max(run.total_variation.statistic for run in runs), 5),
        "threshold": round(min(run.total_variation.threshold for run in runs), 5),
        "ok": result.passed,
        "chi2_p": float(f"{min(run.chi_square.p_value for run in runs):.3g}"),
        "conservation_p": float(f"{result.invariance.p_value:.3g}"),
        "drivers_identical": result.drivers_identical,
        "min_detectable_tv": {
            "invariance": round(result.invariance.min_detectable_tv, 4),
            "chi2": round(max(run.chi_square.min_detectable_tv for run in runs), 4),
            "tv": round(max(run.total_variation.min_detectable_tv for run in runs), 4),
        },
    }


def main(chains: int = 6000, steps: int = 60, seed: int = 0, conservation_chains: int = 20000, out=sys.stdout) -> dict:
    """Run every check of every kernel; print the reports; return the JSON summary."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the toy's tensors are tiny: extra threads only add overhead (and stall on a busy machine)
    try:
        return _run_all(chains, steps, seed, conservation_chains, out)
    finally:
        torch.set_num_threads(threads)


def _run_all(chains: int, steps: int, seed: int, conservation_chains: int, out) -> dict:
    lm = load_toy(MODEL)
    summary = {"kernels": {}, "controls": {}}
    for name, (kernel, must_pass) in kernels(lm, draft_model(lm)).items():
        result = check_kernel(kernel, lm, name=name, chains=chains, steps=steps, conservation_chains=conservation_chains,
                              seed=seed, **SETTINGS)
        print(result.report + "\n", file=out, flush=True)
        entry = summary_entry(result)
        if must_pass:
            summary["kernels"][name] = entry
        else:
            entry["rejected"] = not entry["ok"]
            summary["controls"][name] = entry
        if isinstance(kernel, LateHalfCut):
            limit = control_limit(lm)
            counts = counts_from_samples(result.sampling["lockstep"].sequences, result.law.sequences)
            predicted = chi_square_check(counts, limit, FALSE_FAILURE_RATE)
            entry["tv_to_predicted_limit"] = round(predicted.total_variation, 5)
            print(f"{name}: its predicted limit p_prop(x_1) pi(x_2.. | x_1) is TV {0.5 * np.abs(limit - result.law.probs()).sum():.3f} "
                  f"from p^alpha; the chains are TV {predicted.total_variation:.4f} from it (chi2 p {predicted.p_value:.2e})\n",
                  file=out, flush=True)
    return summary


def all_as_expected(summary: dict) -> bool:
    """Every kernel passed and every control was rejected."""
    return all(e["ok"] for e in summary["kernels"].values()) and all(e["rejected"] for e in summary["controls"].values())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=6000, help="independent chains per run (default 6000)")
    parser.add_argument("--steps", type=int, default=60, help="MH steps per stage (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conservation-chains", type=int, default=20000, help="exact draws for the invariance check (default 20000)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    summary = main(args.chains, args.steps, args.seed, args.conservation_chains)
    print(json.dumps(summary))
    sys.exit(0 if all_as_expected(summary) else 1)
