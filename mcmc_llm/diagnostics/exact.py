"""Exact comparisons against an enumerable target, and the integrated autocorrelation time.

A pmf is given either as a mapping `{state: probability}` (any hashable state, e.g. a tuple of token
ids) or as a 1-D array indexed by state.  Exact pmfs are normalised here (so `p(x)^alpha` can be
passed unnormalised); empirical inputs are counts or probabilities and are normalised too.

- `total_variation(q, p) = 1/2 sum_x |q(x) - p(x)|` over the union of both supports.
- `kl_divergence(counts, p) = KL(p || q~) = sum_x p(x) log(p(x) / q~(x))`, with the empirical law
  smoothed by a pseudocount `a` (Jeffreys' a = 1/2 by default) over the K states of the union of the
  exact support and the observed states: `q~(x) = (n_x + a) / (N + a K)`.  Without smoothing
  (a = 0) any exact state never visited makes the divergence infinite.
- `tv_curve`: TV between the law at step s, estimated by the empirical distribution over chains, and
  the exact pmf, for every step, against the tokens spent so far.  With C chains the curve does not
  go to 0 even for exact draws: it levels off at the noise floor `E TV(empirical of C iid draws, p)`,
  which `tv_noise_floor` computes.
- `integrated_autocorrelation_time`: tau such that ESS = (chains x draws) / tau.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable, Hashable, Iterable, Mapping

import numpy as np

Pmf = Mapping[Hashable, float] | np.ndarray


def _as_mapping(pmf_or_counts: Any, what: str) -> dict[Hashable, float]:
    if isinstance(pmf_or_counts, Mapping):
        mapping = {state: float(value) for state, value in pmf_or_counts.items()}
    else:
        array = np.asarray(pmf_or_counts, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"{what} must be a mapping or a 1-D array, got shape {array.shape}")
        mapping = {index: float(value) for index, value in enumerate(array)}
    values = np.fromiter(mapping.values(), dtype=np.float64, count=len(mapping))
    if values.size == 0 or np.any(values < 0) or not np.all(np.isfinite(values)) or values.sum() <= 0:
        raise ValueError(f"{what} must be non-negative, finite, and not all zero")
    return mapping


def normalize(pmf_or_counts: Any) -> dict[Hashable, float]:
    """`{state: probability}` summing to 1, from counts, weights or probabilities (mapping or 1-D array)."""
    mapping = _as_mapping(pmf_or_counts, "the distribution")
    total = sum(mapping.values())
    return {state: value / total for state, value in mapping.items()}


def count_states(states: Iterable[Hashable], key: Callable[[Any], Hashable] | None = None) -> Counter:
    """How often each state occurs in `states` (after `key`, e.g. `tuple` for token arrays)."""
    return Counter(map(key, states) if key is not None else states)


def total_variation(empirical: Pmf, exact: Pmf) -> float:
    """`1/2 sum_x |q(x) - p(x)|`, q = normalised `empirical` (counts or pmf), p = normalised `exact`.

    Both are mappings `{state: value}` or 1-D arrays indexed by state; states missing on one side count
    as probability 0 there.  The result is in [0, 1].
    """
    q, p = normalize(empirical), normalize(exact)
    return 0.5 * sum(abs(q.get(state, 0.0) - p.get(state, 0.0)) for state in q.keys() | p.keys())


def kl_divergence(empirical_counts: Pmf, exact: Pmf, *, pseudocount: float = 0.5) -> float:
    """`KL(p || q~) = sum_x p(x) log(p(x) / q~(x))` in nats, p = normalised `exact`.

    q~ is the empirical law of the counts smoothed with `pseudocount` a over the K states of the union
    of the exact support (p > 0) and the observed states: `q~(x) = (n_x + a) / (N + a K)`.  The
    smoothing keeps the divergence finite when a state of positive exact probability was never visited;
    it biases the estimate (by about `(K - 1) / (2N)` for well-visited states), so compare values at equal
    N and K only.  `pseudocount=0` gives the plug-in estimate (inf if an exact state was never visited).
    """
    if pseudocount < 0:
        raise ValueError(f"pseudocount must be >= 0, got {pseudocount}")
    counts = _as_mapping(empirical_counts, "empirical_counts")
    p = normalize(exact)
    states = {state for state, prob in p.items() if prob > 0} | {s for s, n in counts.items() if n > 0}
    total = sum(counts.values()) + pseudocount * len(states)
    divergence = 0.0
    for state, prob in p.items():
        if prob <= 0:
            continue
        smoothed = (counts.get(state, 0.0) + pseudocount) / total
        if smoothed <= 0:
            return float("inf")
        divergence += prob * np.log(prob / smoothed)
    return float(divergence)


@dataclasses.dataclass(frozen=True)
class TVCurve:
    """TV to the exact law at each step.

    step: 0..draws-1.  tv: TV of the empirical law over chains at each step.
    tokens: mean over chains of the tokens spent up to and including each step (None if not given).
    band: (low, high) bootstrap quantiles over chains at each step, or None.
    """

    step: np.ndarray
    tv: np.ndarray
    tokens: np.ndarray | None
    band: tuple[np.ndarray, np.ndarray] | None


def _state_ids(states: Any, key: Callable[[Any], Hashable] | None) -> tuple[np.ndarray, dict[Hashable, int]]:
    """Integer ids (chain, draw) of the states, and the id of each distinct state."""
    if isinstance(states, np.ndarray) and states.dtype != object and states.ndim > 2:
        # numeric states carried as arrays (e.g. padded token ids): each (chain, draw) row is one state
        rows = states.reshape(states.shape[0], states.shape[1], -1)
        key = key or (lambda row: tuple(row.tolist()))
        grid = [[rows[c, s] for s in range(rows.shape[1])] for c in range(rows.shape[0])]
    else:
        grid = [list(chain) for chain in states]  # nested lists of tuples of any lengths, or a 2-D array
    draws = {len(chain) for chain in grid}
    if len(draws) != 1 or not grid:
        raise ValueError("states must be shaped (chain, draw): every chain needs the same number of draws")
    ids: dict[Hashable, int] = {}
    out = np.empty((len(grid), draws.pop()), dtype=np.int64)
    for c, chain in enumerate(grid):
        for s, state in enumerate(chain):
            out[c, s] = ids.setdefault(key(state) if key else state, len(ids))
    return out, ids


def _tv_per_step(ids: np.ndarray, p_of_id: np.ndarray, p_total: float) -> np.ndarray:
    """TV at each step of the empirical law of `ids[:, s]`: O(chains) per step, whatever the support size."""
    chains, draws = ids.shape
    tv = np.empty(draws)
    for s in range(draws):
        observed, counts = np.unique(ids[:, s], return_counts=True)
        p_observed = p_of_id[observed]
        tv[s] = 0.5 * (np.abs(counts / chains - p_observed).sum() + (p_total - p_observed.sum()))
    return tv


def tv_curve(
    states: Any,
    exact: Pmf,
    *,
    tokens: np.ndarray | None = None,
    key: Callable[[Any], Hashable] | None = None,
    num_bootstrap: int = 0,
    band_level: float = 0.9,
    seed: int = 0,
) -> TVCurve:
    """TV between the law at step s (empirical over chains) and `exact`, for every step s.

    states: (chain, draw) hashable states (an object array or nested lists), or a numeric array
        (chain, draw, ...) whose trailing axes form one state (turned into tuples, or by `key`).
    exact: the exact pmf (mapping or 1-D array indexed by state; normalised here).
    tokens: (chain, draw) tokens spent by each step (e.g. stats `tokens_resampled`); the curve's x is the
        mean over chains of their cumulative sum.  Add the tokens of the initial generation yourself.
    key: maps a state to the key used in `exact` (e.g. strip padding).
    num_bootstrap: if > 0, resample the chains with replacement this many times and return the
        `band_level` quantile band of TV per step (bootstrap TV is biased upward; read it as a spread).
    """
    ids, id_of = _state_ids(states, key)
    p = normalize(exact)
    p_of_id = np.array([p.get(state, 0.0) for state in id_of], dtype=np.float64)
    p_total = 1.0
    tv = _tv_per_step(ids, p_of_id, p_total)
    cumulative = None
    if tokens is not None:
        tokens = np.asarray(tokens, dtype=np.float64)
        if tokens.shape != ids.shape:
            raise ValueError(f"tokens must be shaped like the states (chain, draw) {ids.shape}, got {tokens.shape}")
        cumulative = np.cumsum(tokens, axis=1).mean(axis=0)
    band = None
    if num_bootstrap > 0:
        rng = np.random.default_rng(seed)
        chains = ids.shape[0]
        replicates = np.stack([
            _tv_per_step(ids[rng.integers(0, chains, size=chains)], p_of_id, p_total) for _ in range(num_bootstrap)
        ])
        tail = (1.0 - band_level) / 2
        band = (np.quantile(replicates, tail, axis=0), np.quantile(replicates, 1 - tail, axis=0))
    return TVCurve(step=np.arange(ids.shape[1]), tv=tv, tokens=cumulative, band=band)


def tv_noise_floor(exact: Pmf, num_samples: int, *, num_replicates: int = 2000, seed: int = 0) -> float:
    """`E TV(q_n, p)` for q_n the empirical law of `num_samples` iid exact draws (Monte Carlo estimate).

    The level a `tv_curve` with `num_samples` chains reaches once the chains are exactly at `p`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    p = np.array(list(normalize(exact).values()))
    counts = np.random.default_rng(seed).multinomial(num_samples, p, size=num_replicates)
    return float(0.5 * np.abs(counts / num_samples - p).sum(axis=1).mean())


def _autocovariance(draws: np.ndarray) -> np.ndarray:
    """Autocovariance at lags 0..N-1 of each chain around its own mean, by FFT; shape (chain, N)."""
    n = draws.shape[1]
    centred = draws - draws.mean(axis=1, keepdims=True)
    size = 1 << int(2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(spectrum * np.conjugate(spectrum), n=size, axis=1)[:, :n] / n


def integrated_autocorrelation_time(draws: Any, *, method: str = "sokal", window_factor: float = 5.0) -> float:
    """tau = 1 + 2 sum_{t >= 1} rho(t), the factor by which autocorrelation shrinks the sample size.

    draws: (chain, draw) or (draw,) of one scalar functional.
    method "sokal" (default): Sokal's self-consistent window.  rho is the autocovariance pooled over
        chains (each centred on its own mean) divided by its lag-0 value; tau(M) = 1 + 2 sum_{t=1}^{M} rho(t)
        with M the smallest lag such that M >= window_factor * tau(M) (Sokal 1997; as in emcee's
        `integrated_time`, window_factor c = 5).  Its relative standard error is about
        sqrt(2 (2M + 1) / (chains x draws)).
    method "ess": tau = chains x draws / ESS_mean, from ArviZ's classic ESS (Geyer's initial monotone
        sequence on split chains), so it also counts the between-chain variance.
    NaN for a constant input.  For an AR(1) chain x_t = phi x_{t-1} + noise, tau = (1 + phi) / (1 - phi).
    """
    array = np.asarray(draws, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(f"draws must have shape (chain, draw) with at least 2 draws, got {np.shape(draws)}")
    if method == "ess":
        from mcmc_llm.diagnostics.arviz_adapter import ess

        return float(array.size / ess(array, method="mean"))
    if method != "sokal":
        raise ValueError(f"method must be 'sokal' or 'ess', got {method!r}")
    autocovariance = _autocovariance(array).mean(axis=0)
    if not autocovariance[0] > 0:
        return float("nan")
    rho = autocovariance / autocovariance[0]
    taus = 2.0 * np.cumsum(rho) - 1.0  # taus[M] = 1 + 2 sum_{t=1}^{M} rho(t)
    within = np.arange(taus.size) < window_factor * taus
    window = int(np.argmin(within)) if not within.all() else taus.size - 1
    return float(taus[window])
