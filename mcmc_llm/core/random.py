"""Explicit randomness: a shared `torch.Generator`, or per-chain counter-based `Streams`.

Every sampler draws its randomness from a *source* passed in by the caller, so a run is a
deterministic function of its seed.  Two kinds of source are accepted by `uniform`, `normal` and
`categorical`:

* a `torch.Generator`: one sequential stream shared by every chain (a chain's draws then depend
  on how many chains share the batch and in which order they are served);
* `Streams`: one independent stream per chain, addressed like explicit keys in JAX.  Chain c's
  key is a hash of (seed, prompt index, chain index); `split(label)` derives child keys, e.g.
  per MH step and per purpose (cut, tokens, accept), and the n-th draw made from a `Streams`
  object is `u = H(key_c, n)`.  A chain's draws therefore depend only on the seed, its prompt and
  chain index and the labels its driver splits by — not on how many chains share the batch, on
  lock-step or continuous batching, or on pre-fetching.  The same keys under two kernels give
  common random numbers, which mixing studies use to compare kernels with less noise.

`H` is SplitMix64's finaliser (Steele, Lea & Flood 2014) over 64-bit integers; a uniform is the
top 53 bits of the hash, shifted half a step off zero: `u = (floor(h / 2^11) + 1/2) / 2^53`, in
(0, 1).  Categorical draws are by inverse CDF from one uniform per row; normals by Box–Muller.
Draws are made on the CPU and moved to the device of the tensors they are used with, so the same
seed gives the same chain on CPU and GPU whenever the model's arithmetic agrees.  The generation
engine's per-token draws are hashed where the keys live instead (`stream_uniforms`: the same
bits with int64 tensor ops, so a GPU decode step needs no host round trip for its randomness).
"""

from __future__ import annotations

import math
import zlib
from typing import Union

import numpy as np
import torch

from mcmc_llm.core.validate import integer

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_STRING_TAG = 1 << 40  # string labels never collide with small integer labels


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective, well-avalanched hash of uint64 words (arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def _signed(word: np.uint64) -> int:
    return int(word) - (1 << 64) if int(word) >= 1 << 63 else int(word)


_GOLDEN_I64, _MIX1_I64, _MIX2_I64 = _signed(_GOLDEN), _signed(_MIX1), _signed(_MIX2)  # the same words as int64
_MIX_ZERO_I64 = _signed(_mix(np.uint64(0)))  # mix(0): every child stream's first draw is mix(key ^ mix(0))


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 words (as uint64)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix_tensor(z: torch.Tensor) -> torch.Tensor:
    """`_mix` on int64 tensors of any device: the same 64 bits (int64 arithmetic wraps like uint64)."""
    z = z + _GOLDEN_I64
    z = (z ^ _shift_right(z, 30)) * _MIX1_I64
    z = (z ^ _shift_right(z, 27)) * _MIX2_I64
    return z ^ _shift_right(z, 31)


def stream_uniforms(keys: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`Streams(keys).split(labels).uniform((R,))` with tensor ops on the device of `keys` (int64
    [R]; `labels` int64 [R] there too): row r's first draw from child stream `labels[r]`, float64."""
    child = _mix_tensor(keys ^ _mix_tensor(labels))
    bits = _mix_tensor(child ^ _MIX_ZERO_I64)  # the child's draw number 0
    return (_shift_right(bits, 11).to(torch.float64) + 0.5) * 2.0**-53


def _word(label: Union[int, str, torch.Tensor]) -> np.ndarray:
    """A label as 64-bit words: ints as themselves, strings by a stable CRC (never Python's `hash`)."""
    if isinstance(label, str):
        return np.asarray(zlib.crc32(label.encode()) | _STRING_TAG, dtype=np.uint64)
    if isinstance(label, torch.Tensor):
        return label.to(device="cpu", dtype=torch.int64).numpy().view(np.uint64)
    if isinstance(label, bool) or not isinstance(label, int):
        raise TypeError(f"a stream label must be an int, a string or an integer tensor, got {label!r}")
    return np.asarray(label & _MASK64, dtype=np.uint64)


def _combine(keys: np.ndarray, label) -> np.ndarray:
    return _mix(keys ^ _mix(_word(label)))


class Streams:
    """One counter-based random stream per chain (see the module docstring).

    keys: int64 [C], one per chain.  Each draw from this object (`uniform`, `normal`,
    `categorical`) uses the next value of its draw counter, so two draws never reuse numbers;
    `split(label)` gives children with counters at zero.  Library code splits by explicit labels
    (`"cut"`, `"tokens"`, `"accept"`, the step number, ...) so that the numbers a chain sees do not
    depend on the order of calls.
    """

    def __init__(self, keys: torch.Tensor | np.ndarray):
        if isinstance(keys, np.ndarray) and keys.dtype == np.uint64 and keys.ndim == 1:
            self._words = keys
        else:
            keys = torch.as_tensor(keys)
            if keys.dtype != torch.int64 or keys.dim() != 1:
                raise ValueError(f"stream keys must be a 1-D int64 tensor, got {keys.dtype} of shape {tuple(keys.shape)}")
            self._words = keys.to("cpu").numpy().view(np.uint64).copy()
        self.draws = 0

    @property
    def keys(self) -> torch.Tensor:
        """The chains' keys as int64 [C] (the same 64 bits as the uint64 words the hash works on)."""
        return torch.from_numpy(self._words.view(np.int64))

    @staticmethod
    def for_chains(seed, prompt_index, chain_index) -> "Streams":
        """Streams of chains addressed by (seed, prompt index, chain index), each [C] or broadcastable.
        `seed` is one int >= 0 for every chain, or a sequence of them, one per chain (per-problem
        seeds: a chain's stream then depends on its own problem's seed only)."""
        seeds = list(seed) if isinstance(seed, (list, tuple, np.ndarray, torch.Tensor)) else [seed]
        for value in seeds:
            integer("seed", value, 0)
        words = np.asarray([int(value) & _MASK64 for value in seeds], dtype=np.uint64)
        prompt_index, chain_index, _ = torch.broadcast_tensors(
            torch.as_tensor(prompt_index, dtype=torch.int64), torch.as_tensor(chain_index, dtype=torch.int64),
            torch.zeros(len(seeds) if len(seeds) > 1 else 1, dtype=torch.int64),
        )
        root = np.broadcast_to(_mix(words if len(seeds) > 1 else words[0]), tuple(prompt_index.shape))
        return Streams(_combine(_combine(root, prompt_index), chain_index))

    def __len__(self) -> int:
        return self._words.shape[0]

    def split(self, label) -> "Streams":
        """Child streams keyed by (key, label); `label` an int, a string or an int tensor [C] (one
        label per chain, e.g. each chain's own step number)."""
        return Streams(_combine(self._words, label))

    def gather(self, rows: torch.Tensor) -> "Streams":
        """The streams of chains `rows` (their own keys: a sub-batch draws what the chains would in the full batch)."""
        return Streams(self._words[torch.as_tensor(rows, device="cpu").numpy()])

    def bits(self, shape: tuple[int, ...]) -> np.ndarray:
        """Fresh hashed 64-bit words of `shape` (first axis: the chain), advancing the draw counter."""
        if not shape or shape[0] != len(self):
            raise ValueError(f"{len(self)} streams cannot draw a tensor of shape {tuple(shape)}; its first axis must be the chain")
        counter = self.draws
        self.draws += 1
        extra = math.prod(shape[1:])
        element = np.arange(extra, dtype=np.uint64).reshape((1,) + tuple(shape[1:]))
        base = _combine(self._words, counter).reshape((-1,) + (1,) * (len(shape) - 1))
        if extra == 1:
            return base.reshape(shape)
        return _mix(base ^ _mix(element))

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform(0, 1) float64 draws of `shape`, never exactly 0 or 1."""
        return torch.from_numpy(((self.bits(shape) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53)

    def __repr__(self) -> str:
        return f"Streams({len(self)} chains, {self.draws} draws made)"


Source = Union[torch.Generator, Streams]


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (an int >= 0)."""
    return torch.Generator().manual_seed(integer("seed", seed, 0))


def split(source: Source, label) -> Source:
    """`source.split(label)` for per-chain streams; a shared generator is its own child."""
    return source.split(label) if isinstance(source, Streams) else source


def gather(source: Source, rows: torch.Tensor) -> Source:
    """The source for the sub-batch of chains `rows` (a shared generator serves any sub-batch)."""
    return source.gather(rows) if isinstance(source, Streams) else source


def uniform(source: Source, like: torch.Tensor) -> torch.Tensor:
    """Uniform(0, 1) draws with the shape, dtype and device of `like`."""
    if isinstance(source, Streams):
        draws = source.uniform(tuple(like.shape))
    else:
        draws = torch.rand(like.shape, generator=source, dtype=torch.float64, device=source.device)
    return draws.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float64)


def normal(source: Source, like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws with the shape, dtype and device of `like`."""
    if isinstance(source, Streams):
        radius = torch.sqrt(-2.0 * torch.log(source.uniform(tuple(like.shape))))
        draws = radius * torch.cos(2.0 * math.pi * source.uniform(tuple(like.shape)))
    else:
        draws = torch.randn(like.shape, generator=source, dtype=torch.float64, device=source.device)
    return draws.to(device=like.device, dtype=like.dtype)


def categorical(source: Source, log_weights: torch.Tensor) -> torch.Tensor:
    """One draw per row from `softmax(log_weights)` ([B, K] -> [B]); rows may hold -inf.

    Inverse-CDF sampling: one uniform per row (so a row's draw depends only on its own weights
    and its own stream), and an entry of probability zero can never be drawn.
    """
    return inverse_cdf(log_weights, source)


def inverse_cdf(log_weights: torch.Tensor, source: "Source | torch.Tensor") -> torch.Tensor:
    """Row r's draw from `softmax(log_weights[r])` by inverse CDF at one uniform: `source` is a
    source (`uniform` draws it) or the uniforms themselves, float64 [R] (`stream_uniforms`)."""
    weights = torch.softmax(log_weights.to(torch.float64), dim=-1)
    cumulative = torch.cumsum(weights, dim=-1)
    u = source[:, None].to(cumulative) if isinstance(source, torch.Tensor) else uniform(source, cumulative[:, :1])
    index = torch.searchsorted(cumulative, u * cumulative[:, -1:], right=True).squeeze(-1)
    return index.clamp_(max=log_weights.shape[-1] - 1)


def random_keys(generator: torch.Generator, count: int) -> Streams:
    """`count` independent streams keyed from a shared generator (for callers that hold only a generator)."""
    keys = torch.randint(-(2**63), 2**63 - 1, (count,), generator=generator, dtype=torch.int64, device=generator.device)
    return Streams(keys.cpu())
