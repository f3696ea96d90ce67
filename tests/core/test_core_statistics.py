"""Statistical tests of the MH kernel and its compositions against exactly known targets.

Every sampler run starts its chains at exact draws of the target, so every draw is marginally exact
for a correct kernel and no burn-in bias enters.  Checks use `mcmc_llm.testing` at its default
false-failure rate 1e-4.  Count-based checks use one draw per chain (the last), so the draws are
independent.  Each family of checks has a companion test showing that it fails for a deliberately
wrong kernel: MH without the Hastings correction under an asymmetric proposal, whose stationary law
for an independence proposal g is `pi * g` (normalised) instead of `pi`.

Power (asserted): every chi-square and conservation check that validates a kernel detects a TV distance
of 0.02 over its bins with probability >= 0.9 (`samples_to_detect_tv_for_pmf` sizes the chains of
`last_draws`; the conservation checks start 100,000 chains, TV 0.010), and the moment checks state the
smallest shift of the mean they detect with that power (`min_detectable_shift`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from mcmc_llm import Cycle, MetropolisHastings, Mixture, make_generator, run_chains
from mcmc_llm.proposals.independence import Independence
from mcmc_llm.proposals.random_walk import RandomWalk
from mcmc_llm.proposals.ring_walk import RingWalk
from mcmc_llm.targets.categorical import Categorical
from mcmc_llm.targets.gaussian_mixture import GaussianMixture
from mcmc_llm.testing import (
    assert_chi_square,
    assert_conservation,
    assert_mcse_moment,
    assert_total_variation,
    chi_square_check,
    conservation_check,
    counts_from_samples,
    mcse_moment_check,
    samples_to_detect_tv_for_pmf,
    total_variation_check,
)

# A categorical target and a proposal that favours exactly the states the target dislikes.
PI = np.array([0.02, 0.05, 0.1, 0.2, 0.25, 0.18, 0.12, 0.08])
G = np.array([0.3, 0.25, 0.15, 0.1, 0.08, 0.06, 0.04, 0.02])
STATES = list(range(len(PI)))
TV_RESOLUTION = 0.02  # chi-square checks of a kernel detect this TV with power >= 0.9 (rate 1e-4)
CHAINS = samples_to_detect_tv_for_pmf(TV_RESOLUTION, PI)  # 24,269 independent chains
CATEGORICAL = Categorical(np.log(PI))
G_DISTRIBUTION = Categorical(np.log(G))

# A bimodal 2-D Gaussian mixture with closed-form moments.
MIXTURE = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [1.5, 1.0]], [[0.8, 1.0], [0.6, 0.5]])
WIDE = GaussianMixture([1.0], [[0.0, 0.5]], [[3.0, 2.5]])  # independence proposal covering the target
SHIFTED = GaussianMixture([1.0], [[2.0, 2.0]], [[2.0, 2.0]])  # with the correction dropped: pi * g != pi
BIN_EDGES = np.array([-3.5, -2.5, -1.5, -0.5, 0.5, 1.0, 1.5, 2.0, 2.5])  # bins of the first coordinate


def categorical_kernels():
    return {
        "independence": MetropolisHastings(CATEGORICAL, Independence(G_DISTRIBUTION)),
        "ring, symmetric": MetropolisHastings(CATEGORICAL, RingWalk(len(PI))),
        "ring, asymmetric": MetropolisHastings(CATEGORICAL, RingWalk(len(PI), up_probability=0.8)),
    }


def wrong_categorical_kernel():
    return MetropolisHastings(CATEGORICAL, Independence(G_DISTRIBUTION), ignore_hastings_correction=True)


def last_draws(kernel, chains=CHAINS, steps=30, seed=1):
    """One draw per chain after `steps` steps from exact draws: independent draws of the law at `steps`."""
    start = CATEGORICAL.sample(make_generator(seed), chains)
    trace = run_chains(kernel, start, steps, seed=seed + 1)
    return counts_from_samples(trace.samples["x"][:, -1], STATES)


def mixture_bin_probabilities():
    """Exact law of the bin of the first coordinate under MIXTURE."""
    edges = np.concatenate([[-np.inf], BIN_EDGES, [np.inf]])
    weights, means, scales = (t.numpy() for t in (MIXTURE.weights, MIXTURE.means[:, 0], MIXTURE.scales[:, 0]))
    cdf = (weights[:, None] * stats.norm.cdf((edges[None] - means[:, None]) / scales[:, None])).sum(0)
    return np.diff(cdf)


def mixture_bin(position):
    return torch.bucketize(position[:, 0].contiguous(), torch.as_tensor(BIN_EDGES)).tolist()


def mixture_trace(proposal, ignore_hastings_correction=False, chains=2_000, steps=200, seed=3):
    kernel = MetropolisHastings(MIXTURE, proposal, ignore_hastings_correction=ignore_hastings_correction)
    return run_chains(kernel, MIXTURE.sample(make_generator(seed), chains), steps, seed=seed + 1)


# ---------------------------------------------------------------- categorical: chi-square and TV


@pytest.mark.parametrize("name", list(categorical_kernels()))
def test_categorical_law_matches_exact_pmf(name):
    counts = last_draws(categorical_kernels()[name])
    assert assert_chi_square(counts, PI).min_detectable_tv <= TV_RESOLUTION
    assert assert_total_variation(counts, PI).min_detectable_tv < 0.031  # BHC bound: conservative


def test_categorical_without_hastings_correction_fails_chi_square_and_tv():
    counts = last_draws(wrong_categorical_kernel())
    chi_square = chi_square_check(counts, PI)
    total_variation = total_variation_check(counts, PI)
    assert not chi_square.passed and chi_square.statistic > 1_000
    assert not total_variation.passed and total_variation.statistic > 5 * total_variation.threshold
    # ... and what it samples is pi * g, as the theory says
    biased = PI * G / (PI * G).sum()
    assert_chi_square(counts, biased)


def test_asymmetric_ring_walk_without_correction_fails():
    kernel = MetropolisHastings(CATEGORICAL, RingWalk(len(PI), up_probability=0.8), ignore_hastings_correction=True)
    assert not chi_square_check(last_draws(kernel), PI).passed


# ---------------------------------------------------------------- conservation: one step from exact draws


@pytest.mark.parametrize("name", list(categorical_kernels()))
def test_categorical_one_step_conservation(name):
    start = CATEGORICAL.sample(make_generator(11), 100_000)
    result = assert_conservation(categorical_kernels()[name], start, lambda x: x.tolist(), PI, STATES, seed=12)
    assert 0.2 < result.acceptance_rate < 0.9  # the kernel did move: the test had power
    assert result.min_detectable_tv <= TV_RESOLUTION, result.message


def test_categorical_conservation_fails_without_hastings_correction():
    start = CATEGORICAL.sample(make_generator(11), 100_000)
    result = conservation_check(wrong_categorical_kernel(), start, lambda x: x.tolist(), PI, STATES, seed=12)
    assert not result.passed and result.statistic > 1_000
    with pytest.raises(AssertionError, match="conservation check FAILED after 1 kernel step"):
        assert_conservation(wrong_categorical_kernel(), start, lambda x: x.tolist(), PI, STATES, seed=12)


@pytest.mark.parametrize("proposal", [RandomWalk(1.5), Independence(WIDE)], ids=["random walk", "independence"])
def test_mixture_one_step_conservation(proposal):
    start = MIXTURE.sample(make_generator(13), 100_000)
    probabilities = mixture_bin_probabilities()
    support = list(range(len(probabilities)))
    kernel = MetropolisHastings(MIXTURE, proposal)
    result = assert_conservation(kernel, start, mixture_bin, probabilities, support, seed=14)
    assert result.acceptance_rate > 0.1
    assert result.min_detectable_tv <= TV_RESOLUTION, result.message  # over the 10 bins of the first coordinate


def test_mixture_conservation_fails_without_hastings_correction():
    start = MIXTURE.sample(make_generator(13), 100_000)
    probabilities = mixture_bin_probabilities()
    kernel = MetropolisHastings(MIXTURE, Independence(SHIFTED), ignore_hastings_correction=True)
    result = conservation_check(kernel, start, mixture_bin, probabilities, range(len(probabilities)), seed=14)
    assert not result.passed and result.statistic > 200


def test_conservation_reports_a_kernel_that_never_moves():
    class Stay:
        def init(self, position):
            return position

        def step(self, generator, state):
            return state, {"accepted": torch.zeros(state.shape[0], dtype=torch.bool)}

    start = CATEGORICAL.sample(make_generator(15), 10_000)
    result = conservation_check(Stay(), start, lambda x: x.tolist(), PI, STATES)
    assert result.passed and result.acceptance_rate == 0.0
    assert "no move was accepted" in result.message


# ---------------------------------------------------------------- Gaussian mixture: MCSE-scaled moments


@pytest.mark.parametrize("proposal", [RandomWalk(1.5), Independence(WIDE)], ids=["random walk", "independence"])
def test_mixture_mean_and_second_moment(proposal):
    draws = mixture_trace(proposal).samples["x"]
    assert draws.shape == (2_000, 200, 2)
    mean = assert_mcse_moment(draws, MIXTURE.mean().numpy())
    second = assert_mcse_moment(draws**2, (MIXTURE.variance() + MIXTURE.mean() ** 2).numpy())
    # power: a shift of the mean by 0.12, or of the second moment by 0.1, in either coordinate is detected
    # with probability >= 0.9 (measured: 0.11 / 0.036 and 0.088 / 0.029 for the random walk, whose first
    # coordinate is bimodal; 0.065 / 0.026 and 0.077 / 0.035 for the independence proposal)
    assert max(mean.min_detectable_shift) < 0.12, mean.message
    assert max(second.min_detectable_shift) < 0.1, second.message


def test_mixture_moments_fail_without_hastings_correction():
    draws = mixture_trace(Independence(SHIFTED), ignore_hastings_correction=True).samples["x"]
    mean = mcse_moment_check(draws, MIXTURE.mean().numpy())
    second = mcse_moment_check(draws**2, (MIXTURE.variance() + MIXTURE.mean() ** 2).numpy())
    assert not mean.passed and mean.statistic > 10 * mean.threshold
    assert not second.passed and second.statistic > 3 * second.threshold


def test_mixture_moments_with_max_swap_fail():
    """Max-swap (alpha -> inf) samples the modes, not pi: the moment check must notice."""
    kernel = MetropolisHastings(MIXTURE, RandomWalk(1.5), rule="max_swap")
    draws = run_chains(kernel, MIXTURE.sample(make_generator(5), 2_000), 50, seed=6).samples["x"]
    assert not mcse_moment_check(draws**2, (MIXTURE.variance() + MIXTURE.mean() ** 2).numpy()).passed


# ---------------------------------------------------------------- compositions preserve the target


def test_cycle_preserves_target():
    kernels = categorical_kernels()
    cycle = Cycle(kernels["ring, asymmetric"], kernels["independence"])
    assert assert_chi_square(last_draws(cycle, steps=15), PI).min_detectable_tv <= TV_RESOLUTION


def test_mixture_of_kernels_preserves_target():
    kernels = categorical_kernels()
    components = [kernels["ring, asymmetric"], kernels["independence"], kernels["ring, symmetric"]]
    mixture = Mixture(components, [0.3, 0.5, 0.2])
    assert assert_chi_square(last_draws(mixture, steps=20), PI).min_detectable_tv <= TV_RESOLUTION
    start = CATEGORICAL.sample(make_generator(17), 100_000)
    assert assert_conservation(mixture, start, lambda x: x.tolist(), PI, STATES, seed=18).min_detectable_tv <= TV_RESOLUTION


def test_composition_with_a_wrong_kernel_fails():
    kernels = categorical_kernels()
    cycle = Cycle(kernels["ring, symmetric"], wrong_categorical_kernel())
    assert not chi_square_check(last_draws(cycle, steps=15), PI).passed
    mixture = Mixture([kernels["ring, symmetric"], wrong_categorical_kernel()], [0.5, 0.5])
    assert not chi_square_check(last_draws(mixture, steps=20), PI).passed
