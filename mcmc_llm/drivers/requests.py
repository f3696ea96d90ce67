"""The requests of asynchronous chains (`mcmc_llm.drivers.asynchronous`): small records, one per
generation request, that are the engine's keys; and `rows_of`, rows of several batches as one."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from mcmc_llm.core.tree import concat_padded, gather_chains
from mcmc_llm.kernels.suffix_mh import SuffixRequest
from mcmc_llm.lm.generation import Continuation


@dataclasses.dataclass(eq=False)  # compared by identity: it is the engine's key
class Request:
    """One generation request of one chain.

    action: `stage * (N_MCMC + 1) + step`, step 0 the stage's extension, j >= 1 MH step j;
    prefetched: drawn ahead of the chain's current action (`drivers.prefetch`);
    plan: `(SuffixRequest, row)` of an MH step (the kernel's request and this chain's row in it);
    result: `(Continuation, row)` once finished, while it waits to become the chain's current request."""

    chain: int
    action: int
    prefetched: bool = False
    plan: tuple[SuffixRequest, int] | None = None
    result: tuple[Continuation, int] | None = None


def rows_of(parts: list[tuple[Any, int]]) -> Any:
    """Rows `(batch, row)` of several chain-batched trees as one batch, in order (one gather per
    batch; 2-D leaves, such as a continuation's per-token records, right-padded to one width)."""
    sources: dict[int, list[int]] = {}
    for i, (batch, _) in enumerate(parts):
        sources.setdefault(id(batch), []).append(i)
    pieces, order = [], []
    for positions in sources.values():
        pieces.append(gather_chains(parts[positions[0]][0], torch.as_tensor([parts[i][1] for i in positions])))
        order += positions
    return gather_chains(concat_padded(pieces), torch.argsort(torch.as_tensor(order)))
