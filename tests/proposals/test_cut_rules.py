"""Cut rules are objects: the built-ins implement the protocol, a user's rule plugs in anywhere a
name does, and the token budget comes from the rule's own expectation.

Power (chi-square at false-failure rate 1e-4, TV over the pooled bins detected with probability >= 0.9):
the user's rule's MH kernel is checked for conservation of p^alpha from exact draws at TV 0.02 (sized by
`chains_to_detect`, two MH steps: cheap); the end-to-end runs through both drivers (two stages of 30
MH steps) use 6000 chains and detect TV 0.044.
"""

from __future__ import annotations

import pytest
import torch

from mcmc_llm.core.deprecation import OldNameWarning
from mcmc_llm.core.random import make_generator
from mcmc_llm.drivers.power import PowerSamplerConfig, power_sample, power_token_budget
from mcmc_llm.kernels.mh import MetropolisHastings
from mcmc_llm.lm.exact import power_law, sample_exact
from mcmc_llm.lm.generation import SamplingRule
from mcmc_llm.lm.protocol import TokenBatch
from mcmc_llm.lm.sequences import SequenceBatch
from mcmc_llm.lm.toy import load_toy
from mcmc_llm.proposals.cut_rules import (
    CUT_RULES, CutRule, CutRuleBase, UniformCut, normalised, positions_allowed, resolve_cut_rule,
)
from mcmc_llm.proposals.suffix import SuffixResampling
from mcmc_llm.targets.sequence import PowerTarget
from mcmc_llm.testing import assert_conservation, chi_square_check, counts_from_samples
from tests.power_helpers import FALSE_FAILURE_RATE, TV_RESOLUTION, chains_to_detect


class LastTokenOrUniform(CutRuleBase):
    """A user's rule: half the mass on the last position, half uniform; reads only lengths."""

    reads_lengths_only = True

    def log_probs(self, position, block_start):
        allowed = positions_allowed(position)
        last = torch.arange(position.capacity)[None] == (position.lengths[:, None] - 1)
        scores = torch.log(0.5 / position.lengths.clamp(min=1)[:, None] + 0.5 * last)
        return normalised(scores.expand_as(position.log_q).clone(), allowed)


@pytest.mark.parametrize("name", CUT_RULES)
def test_builtins_implement_the_protocol_and_their_expected_resampled_matches_their_law(name):
    rule = resolve_cut_rule(name, 2.0)
    assert isinstance(rule, CutRule) and rule.name == name
    if rule.reads_lengths_only:
        numeric = CutRuleBase.expected_resampled(rule, 7, 3)  # from log_probs on a probe sequence
        assert rule.expected_resampled(7, 3) == pytest.approx(numeric)


def test_a_users_rule_reaches_the_power_law_in_both_batchings():
    lm = load_toy("trigram")
    law = power_law(lm, 4, 3.0)
    for batching in ("continuous", "lockstep"):
        config = PowerSamplerConfig(alpha=3.0, block_size=2, max_new_tokens=4, mcmc_steps=30, cut_rule=LastTokenOrUniform(),
                                    batching=batching)
        result = power_sample(lm, [[]], config, chains_per_prompt=6000, seed=41)
        check = chi_square_check(counts_from_samples(map(tuple, result.sequences()), law.sequences), law.probs(), FALSE_FAILURE_RATE)
        assert check.passed, check.message
        assert check.min_detectable_tv <= 0.045, check.message  # 6000 chains; TV 0.02 in the conservation test


def test_a_users_rule_conserves_the_power_law_from_exact_draws():
    """The user's rule inside an MH kernel: chains started at exact p^alpha draws stay at p^alpha after
    two steps, checked at TV resolution 0.02 (the end-to-end runs above stop at 0.044)."""
    lm, n, alpha = load_toy("trigram"), 4, 3.0
    law, rule = power_law(lm, n, alpha), SamplingRule(1 / alpha)
    chains = chains_to_detect(law.probs())
    draws = sample_exact(law, make_generator(42), chains)
    start = SequenceBatch.from_sequences(lm, rule, TokenBatch.from_lists([[]] * chains), draws, capacity=n)
    kernel = MetropolisHastings(PowerTarget(alpha, n), SuffixResampling(lm, rule, resolve_cut_rule(LastTokenOrUniform()), n))
    result = assert_conservation(kernel, start, lambda b: map(tuple, b.to_lists()), law.probs(), law.sequences, seed=43,
                                 false_failure_rate=FALSE_FAILURE_RATE, num_steps=2)
    assert result.acceptance_rate > 0.2 and result.min_detectable_tv <= TV_RESOLUTION, result.message


def test_a_users_rule_feeds_the_token_budget():
    config = PowerSamplerConfig(block_size=4, max_new_tokens=8, mcmc_steps=2, cut_rule=LastTokenOrUniform())
    expected = 8 + 2 * (LastTokenOrUniform().expected_resampled(4, 0) + LastTokenOrUniform().expected_resampled(8, 4))
    assert power_token_budget(config) == pytest.approx(expected)
    assert LastTokenOrUniform().expected_resampled(4, 0) == pytest.approx(0.5 * 2.5 + 0.5 * 1)
    uniform = PowerSamplerConfig(block_size=4, max_new_tokens=8, mcmc_steps=2)
    assert power_token_budget(uniform) == pytest.approx(8 + 2 * (2.5 + 4.5))


@pytest.mark.filterwarnings("default::mcmc_llm.core.deprecation.OldNameWarning")
def test_bad_cut_rules_are_named():
    with pytest.raises(ValueError, match="unknown cut rule 'middle'; allowed: uniform, within-block"):
        PowerSamplerConfig(cut_rule="middle")
    with pytest.raises(TypeError, match="object is not a cut rule: it lacks log_probs"):
        resolve_cut_rule(object())
    with pytest.raises(ValueError, match="got cut_rule='restart' and its old name kernel='uniform'"):
        PowerSamplerConfig(cut_rule="restart", kernel="uniform")
    with pytest.warns(OldNameWarning, match=r"PowerSamplerConfig\(kernel=...\) is the old name of cut_rule="):
        assert PowerSamplerConfig(kernel="restart").cut_rule == "restart"  # the old keyword still works


@pytest.mark.filterwarnings("default::mcmc_llm.core.deprecation.OldNameWarning")
def test_old_names_work_with_one_message_and_keep_recorded_keys(capsys):
    """The config key `kernel` and the flag `--kernel` still work, each with one deprecation line; the
    recorded (fingerprint) key of the cut rule stays `kernel`, so stored results still resume."""
    from mcmc_llm.cli import main
    from mcmc_llm.evaluation.methods.power import PowerSampling

    with pytest.warns(OldNameWarning, match="power key 'kernel' is the old name of 'cut_rule'"):
        old = PowerSampling.from_keys(8, kernel="restart", block_size=4)
    new = PowerSampling.from_keys(8, cut_rule="restart", block_size=4)
    assert old.settings() == new.settings() and new.settings()["kernel"] == "restart" and "cut_rule" not in new.settings()
    with pytest.raises(TypeError, match="keys cut_rule and kernel name the same setting"):
        PowerSampling.from_keys(8, kernel="restart", cut_rule="restart")
    code = main(["sample", "--model", "toy:trigram", "--kernel", "restart", "--max-new-tokens", "4", "--block-size", "2",
                 "--mcmc-steps", "1", "--quiet"])
    err = capsys.readouterr().err.splitlines()
    assert code == 0
    assert err == ["mcmc-llm sample: deprecated: --kernel is the old name of --cut-rule; use --cut-rule (the old name "
                   "will be removed)"]


def test_rows_with_no_allowed_cut_take_the_identity_move():
    batch = SequenceBatch.empty(TokenBatch.from_lists([[], []]), 4)
    batch = SequenceBatch(**{**batch.__dict__, "lengths": torch.tensor([0, 3])})
    cut, log_cut = UniformCut().sample(torch.Generator().manual_seed(0), batch, 0)
    assert cut[0] == 0 and torch.isneginf(log_cut[0]).all() and 0 <= int(cut[1]) < 3
