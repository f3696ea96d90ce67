"""Plumbing of the MH kernel, compositions and driver: stubs that always accept or always reject,
the max-swap rule, determinism of runs, and the error messages for bad inputs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from mcmc_llm import Cycle, MetropolisHastings, Mixture, make_generator, run_chains
from mcmc_llm.core.protocols import Move
from mcmc_llm.proposals.random_walk import RandomWalk
from mcmc_llm.proposals.ring_walk import RingWalk
from mcmc_llm.targets.categorical import Categorical
from mcmc_llm.targets.gaussian_mixture import GaussianMixture

CHAINS = 64
MIXTURE = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [1.5, 1.0]], [[0.8, 1.0], [0.6, 0.5]])


class FlatTarget:
    """log pi(x) = 0 everywhere: only the proposal's terms decide acceptance."""

    def log_prob(self, x):
        return torch.zeros(x.shape[0], dtype=torch.float64)


class QuadraticTarget:
    """log pi(x) = -|x|^2 / 2 for x of shape [C, d]."""

    def log_prob(self, x):
        return -0.5 * (x**2).sum(-1)


class Shift:
    """x' = x + shift, reporting log q(x|x') = `log_q_backward` and log q(x'|x) = 0.

    `log_q_backward = +inf` makes every log acceptance ratio +inf (always accept); `-inf` makes it -inf
    (always reject).
    """

    def __init__(self, shift=1.0, log_q_backward=math.inf):
        self.shift, self.log_q_backward = shift, log_q_backward

    def propose(self, generator, x):
        chains = x.shape[0]
        return Move(
            x + self.shift,
            torch.zeros(chains, dtype=torch.float64),
            torch.full((chains,), self.log_q_backward, dtype=torch.float64),
            {"shift": torch.full((chains,), float(self.shift))},
        )


class Scale:
    """Deterministic x' = factor * x with a chosen Hastings term (to separate the target from q)."""

    def __init__(self, factor, log_q_backward):
        self.factor, self.log_q_backward = factor, log_q_backward

    def propose(self, generator, x):
        chains = x.shape[0]
        zeros = torch.zeros(chains, dtype=torch.float64)
        return Move(x * self.factor, zeros, torch.full_like(zeros, self.log_q_backward))


class Reshape:
    """A buggy proposal whose position or log-probabilities have the wrong shape."""

    def __init__(self, position_columns=None, log_q_shape=None):
        self.position_columns, self.log_q_shape = position_columns, log_q_shape

    def propose(self, generator, x):
        chains = x.shape[0]
        position = x if self.position_columns is None else torch.zeros(chains, self.position_columns, dtype=x.dtype)
        log_q = torch.zeros(self.log_q_shape or (chains,), dtype=torch.float64)
        return Move(position, log_q, log_q)


def start(chains=CHAINS, dim=2, seed=0):
    """Positions on a grid of quarters, so that shifting them by whole numbers is exact in floating point."""
    return torch.round(4 * torch.randn(chains, dim, generator=make_generator(seed), dtype=torch.float64)) / 4


def always_accept():
    return MetropolisHastings(FlatTarget(), Shift(1.0, math.inf))


def always_reject():
    return MetropolisHastings(FlatTarget(), Shift(1.0, -math.inf))


# ---------------------------------------------------------------- always accept / always reject


def test_always_accept_moves_every_chain():
    x = start()
    kernel = always_accept()
    state, info = kernel.step(make_generator(0), kernel.init(x))
    assert torch.equal(state.position, x + 1.0)
    assert info.accepted.dtype == torch.bool and bool(info.accepted.all())
    assert torch.equal(info.acceptance_probability, torch.ones(CHAINS, dtype=torch.float64))
    assert bool(torch.isposinf(info.log_accept_ratio).all())
    assert torch.equal(info.proposal["shift"], torch.ones(CHAINS))
    assert state.log_target.shape == (CHAINS,)


def test_always_reject_keeps_every_chain():
    x = start()
    kernel = always_reject()
    initial = kernel.init(x)
    state, info = kernel.step(make_generator(0), initial)
    assert torch.equal(state.position, x)
    assert torch.equal(state.log_target, initial.log_target)
    assert not bool(info.accepted.any())
    assert torch.equal(info.acceptance_probability, torch.zeros(CHAINS, dtype=torch.float64))
    assert bool(torch.isneginf(info.log_accept_ratio).all())
    assert set(info._fields) == {"accepted", "log_accept_ratio", "acceptance_probability", "proposal"}


def test_proposal_outside_target_support_is_rejected():
    target = Categorical([0.0, 1.0, 2.0])

    class Escape:  # moves every chain to state 3, outside {0, 1, 2}
        def propose(self, generator, x):
            zeros = torch.zeros(x.shape[0], dtype=torch.float64)
            return Move(torch.full_like(x, 3), zeros, zeros)

    x = torch.tensor([0, 1, 2, 1])
    kernel = MetropolisHastings(target, Escape())
    state, info = kernel.step(make_generator(0), kernel.init(x))
    assert torch.equal(state.position, x) and not bool(info.accepted.any())
    assert bool(torch.isneginf(info.log_accept_ratio).all())


def test_driver_records_always_accept_and_always_reject_traces():
    x = start(chains=8)
    accept = run_chains(always_accept(), x, 5, seed=1)
    expected = x.numpy()[:, None, :] + np.arange(1, 6)[None, :, None]
    np.testing.assert_array_equal(accept.samples["x"], expected)
    assert accept.samples["x"].shape == (8, 5, 2) and accept.samples["log_target"].shape == (8, 5)
    assert set(accept.stats) == {"accepted", "log_accept_ratio", "acceptance_probability", "shift"}
    assert accept.acceptance_rate() == 1.0 and accept.num_chains == 8 and accept.num_draws == 5
    reject = run_chains(always_reject(), x, 5, seed=1)
    np.testing.assert_array_equal(reject.samples["x"], np.repeat(x.numpy()[:, None, :], 5, axis=1))
    assert reject.acceptance_rate() == 0.0


def test_max_swap_accepts_exactly_the_uphill_moves_whatever_q_says():
    x = start(seed=3) + 0.1  # no chain at the origin
    uphill_but_q_forbids = Scale(0.5, -math.inf)  # |x| shrinks: pi increases
    downhill_but_q_insists = Scale(2.0, math.inf)  # |x| grows: pi decreases
    for proposal, metropolis_accepts, max_swap_accepts in [
        (uphill_but_q_forbids, False, True),
        (downhill_but_q_insists, True, False),
    ]:
        for rule, expected in [("metropolis", metropolis_accepts), ("max_swap", max_swap_accepts)]:
            kernel = MetropolisHastings(QuadraticTarget(), proposal, rule=rule)
            _, info = kernel.step(make_generator(0), kernel.init(x))
            assert bool((info.accepted == expected).all()), (rule, proposal.factor)
            assert torch.equal(info.acceptance_probability, info.accepted.double())


# ---------------------------------------------------------------- compositions


def test_cycle_applies_every_kernel_and_prefixes_infos():
    x = start(chains=8)
    trace = run_chains(Cycle(always_accept(), always_reject(), always_accept()), x, 3, seed=0)
    np.testing.assert_array_equal(trace.samples["x"][:, -1], (x + 6.0).numpy())
    for index, accepted in enumerate([True, False, True]):
        assert np.all(trace.stats[f"k{index}.accepted"] == accepted)
    assert "k1.log_accept_ratio" in trace.stats and "k2.shift" in trace.stats


def test_mixture_routes_each_chain_to_its_kernel():
    x = start(chains=2_000)
    mixture = Mixture([always_accept(), always_reject()], [0.25, 0.75])
    state, info = mixture.step(make_generator(4), mixture.init(x))
    used_first = info.kernel_index == 0
    assert 0.2 < float(used_first.double().mean()) < 0.3
    assert torch.equal(info.info["accepted"].bool(), used_first)
    assert torch.equal(state.position[used_first], x[used_first] + 1.0)
    assert torch.equal(state.position[~used_first], x[~used_first])


def test_mixture_with_zero_weight_never_uses_that_kernel():
    trace = run_chains(Mixture([always_accept(), always_reject()], [1.0, 0.0]), start(chains=500), 4, seed=2)
    assert np.all(trace.stats["kernel_index"] == 0) and trace.acceptance_rate() == 1.0


# ---------------------------------------------------------------- determinism


def _mixture_kernel():
    return Mixture(
        [MetropolisHastings(MIXTURE, RandomWalk(0.7)), MetropolisHastings(MIXTURE, RandomWalk(2.0))], [0.4, 0.6]
    )


def _same_trace(a, b):
    return a.samples.keys() == b.samples.keys() and a.stats.keys() == b.stats.keys() and all(
        np.array_equal(a.samples[k], b.samples[k]) for k in a.samples
    ) and all(np.array_equal(a.stats[k], b.stats[k], equal_nan=True) for k in a.stats)


def test_same_seed_gives_identical_trace():
    x = MIXTURE.sample(make_generator(0), 200)
    assert _same_trace(run_chains(_mixture_kernel(), x, 30, seed=7), run_chains(_mixture_kernel(), x, 30, seed=7))


def test_different_seed_gives_different_trace():
    x = MIXTURE.sample(make_generator(0), 200)
    first, second = run_chains(_mixture_kernel(), x, 30, seed=7), run_chains(_mixture_kernel(), x, 30, seed=8)
    assert not np.array_equal(first.samples["x"], second.samples["x"])
    assert not np.array_equal(first.stats["kernel_index"], second.stats["kernel_index"])


# ---------------------------------------------------------------- error messages


@pytest.mark.parametrize("num_steps", [0, -3, 2.5, True, "10", None])
def test_num_steps_must_be_a_positive_integer(num_steps):
    with pytest.raises(ValueError, match=re.escape(f"num_steps must be a positive integer, got {num_steps!r}")):
        run_chains(always_accept(), start(), num_steps)


def test_zero_chains_is_rejected():
    with pytest.raises(ValueError, match="the initial position must hold at least one chain, got 0"):
        run_chains(always_accept(), torch.empty(0, 2, dtype=torch.float64), 3)


def test_negative_seed_is_rejected():
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        run_chains(always_accept(), start(), 3, seed=-1)


def test_non_finite_initial_log_density_names_chain_and_value():
    categorical = MetropolisHastings(Categorical([0.0, 1.0, 2.0]), RingWalk(3))
    with pytest.raises(ValueError, match=r"log-density is -inf at the initial position of chain 3"):
        run_chains(categorical, torch.tensor([0, 1, 2, 7, 1]), 3)
    x = start(chains=4)
    x[1, 0] = math.nan
    with pytest.raises(ValueError, match=r"log-density is nan at the initial position of chain 1"):
        MetropolisHastings(MIXTURE, RandomWalk(1.0)).init(x)


def test_target_must_return_one_value_per_chain():
    class Summed:
        def log_prob(self, x):
            return torch.zeros(())

    with pytest.raises(ValueError, match=re.escape("target.log_prob returned shape (); expected (4,)")):
        MetropolisHastings(Summed(), RandomWalk(1.0)).init(start(chains=4))


def test_gaussian_mixture_position_of_wrong_dimension():
    with pytest.raises(ValueError, match=re.escape("positions must have shape (chains, 2), got (4, 3)")):
        run_chains(MetropolisHastings(MIXTURE, RandomWalk(1.0)), start(chains=4, dim=3), 2)


def test_proposal_position_of_wrong_shape():
    kernel = MetropolisHastings(FlatTarget(), Reshape(position_columns=3))
    with pytest.raises(ValueError, match=re.escape("cannot select between tensors of shapes (4, 3) and (4, 2)")):
        run_chains(kernel, start(chains=4), 2)
    kernel = MetropolisHastings(MIXTURE, Reshape(position_columns=3))
    with pytest.raises(ValueError, match=re.escape("positions must have shape (chains, 2), got (4, 3)")):
        run_chains(kernel, start(chains=4), 2)


@pytest.mark.parametrize("log_q_shape", [(4, 1), (5,), (4, 4)])
def test_proposal_log_probabilities_of_wrong_shape(log_q_shape):
    kernel = MetropolisHastings(FlatTarget(), Reshape(log_q_shape=log_q_shape))
    message = f"log_q_forward has shape {log_q_shape}; expected (4,), one value per chain"
    with pytest.raises(ValueError, match=re.escape(message)):
        run_chains(kernel, start(chains=4), 2)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([-1.0, 2.0], "got [-1.0, 2.0]"),
        ([0.0, 0.0], "got [0.0, 0.0]"),
        ([math.nan, 1.0], "got [nan, 1.0]"),
        ([math.inf, 1.0], "got [inf, 1.0]"),
        ([0.2, 0.3, 0.5], "got 3 weights for 2 kernels"),
    ],
)
def test_bad_mixture_weights(weights, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Mixture([always_accept(), always_reject()], weights)


def test_empty_composition_and_unknown_rule():
    with pytest.raises(ValueError, match="a composition needs at least one kernel, got none"):
        Cycle()
    with pytest.raises(ValueError, match="unknown acceptance rule 'gibbs'"):
        MetropolisHastings(FlatTarget(), RandomWalk(1.0), rule="gibbs")


def test_ring_walk_arguments():
    with pytest.raises(ValueError, match="num_states must be an integer >= 3, got 2"):
        RingWalk(2)
    with pytest.raises(ValueError, match="up_probability must lie strictly between 0 and 1, got 1.0"):
        RingWalk(5, up_probability=1.0)
    with pytest.raises(ValueError, match=re.escape("positions must be a 1-D integer tensor")):
        RingWalk(5).propose(make_generator(0), torch.zeros(3, 1))


def test_ring_walk_reports_both_directions():
    move = RingWalk(5, up_probability=0.8).propose(make_generator(0), torch.tensor([0, 4, 2, 2, 0, 4]))
    up = move.details["step_up"]
    expected = torch.where(up, torch.tensor([1, 0, 3, 3, 1, 0]), torch.tensor([4, 3, 1, 1, 4, 3]))
    assert torch.equal(move.position, expected)
    assert torch.allclose(move.log_q_forward, torch.where(up, math.log(0.8), math.log(0.2)).double())
    assert torch.allclose(move.log_q_backward, torch.where(up, math.log(0.2), math.log(0.8)).double())
