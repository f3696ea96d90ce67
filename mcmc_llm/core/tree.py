"""Per-chain selection on batched states.

Every state in mcmc_llm is batched over chains: a tensor whose first axis is the chain,
or a NamedTuple / frozen dataclass whose tensor fields all have the chain as first axis.
`select(mask, new, old)` picks, chain by chain, `new` where `mask` is true and `old` elsewhere.
It is how the MH kernel applies its accept/reject decision to any kind of position.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch


def map_structure(leaf, *trees: Any, node=None) -> Any:
    """The one walk over nested states: `leaf(*leaves)` at every leaf position of `trees`, which share
    one structure (tensors, NamedTuples, frozen dataclasses, tuples, lists, dicts; anything else is a
    leaf too), rebuilt in the structure of `trees[0]`.  `node(*subtrees)`, when given, sees every
    subtree first and replaces the walk below it by returning anything but `NotImplemented`."""
    first = trees[0]
    if node is not None:
        replaced = node(*trees)
        if replaced is not NotImplemented:
            return replaced
    walk = lambda *parts: map_structure(leaf, *parts, node=node)  # noqa: E731
    if isinstance(first, torch.Tensor):
        return leaf(*trees)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        names = [f.name for f in dataclasses.fields(first) if f.init]
        return dataclasses.replace(first, **{name: walk(*(getattr(t, name) for t in trees)) for name in names})
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(walk(*parts) for parts in zip(*trees)))
    if isinstance(first, (tuple, list)):
        return type(first)(walk(*parts) for parts in zip(*trees))
    if isinstance(first, dict):
        return {key: walk(*(t[key] for t in trees)) for key in first}
    return leaf(*trees)


def select(mask: torch.Tensor, new: Any, old: Any) -> Any:
    """Chain-wise `where`: `new[c]` if `mask[c]` else `old[c]`, recursively over fields.

    Non-tensor leaves (ints, strings, models) must be equal in `new` and `old`; they are shared.
    """

    def pick(new_leaf, old_leaf):
        if not isinstance(new_leaf, torch.Tensor):
            return new_leaf
        if new_leaf.shape != old_leaf.shape:
            raise ValueError(
                f"cannot select between tensors of shapes {tuple(new_leaf.shape)} and {tuple(old_leaf.shape)}; "
                "a proposal must return a position with the same shapes as the current one"
            )
        return torch.where(mask.reshape(mask.shape + (1,) * (new_leaf.dim() - 1)), new_leaf, old_leaf)

    return map_structure(pick, new, old)


def tensor_leaves(tree: Any) -> list[torch.Tensor]:
    """The tensor leaves of `tree`, in `map_structure`'s order."""
    leaves: list[torch.Tensor] = []

    def collect(leaf):
        if isinstance(leaf, torch.Tensor):
            leaves.append(leaf)
        return leaf  # the rebuilt tree is the same tree

    map_structure(collect, tree)
    return leaves


def num_chains(position: Any) -> int:
    """Size of the leading (chain) axis of the first tensor with one found in `position`."""
    if isinstance(position, torch.Tensor) and position.dim() == 0:
        raise ValueError("a position must be batched over chains: got a 0-dimensional tensor")
    for leaf in tensor_leaves(position):
        if leaf.dim() > 0:
            return leaf.shape[0]
    raise ValueError(f"no tensor with a chain axis found in position of type {type(position).__name__}")


def map_tensors(fn, tree: Any) -> Any:
    """Apply `fn` to every tensor leaf of `tree`, keeping its structure."""
    return map_structure(lambda leaf: fn(leaf) if isinstance(leaf, torch.Tensor) else leaf, tree)


def concat_chains(trees: Sequence[Any]) -> Any:
    """One tree holding the chains of `trees` (same structure and leaf shapes past the chain axis), in
    order; non-tensor leaves are the first tree's (a suffix plan's samplers are not: `proposals.plans`)."""
    return map_structure(lambda *leaves: torch.cat(leaves) if isinstance(leaves[0], torch.Tensor) else leaves[0], *trees)


def concat_padded(trees: Sequence[Any]) -> Any:
    """`concat_chains` of trees whose 2-D leaves (per-token records [C, W]) may differ in width W:
    those are right-padded with zeros to the widest first."""
    width = max((leaf.shape[1] for tree in trees for leaf in tensor_leaves(tree) if leaf.dim() == 2), default=0)
    pad = lambda leaf: torch.nn.functional.pad(leaf, (0, width - leaf.shape[1])) if leaf.dim() == 2 else leaf  # noqa: E731
    return concat_chains([map_tensors(pad, tree) for tree in trees])


def gather_chains(tree: Any, rows: torch.Tensor) -> Any:
    """The sub-batch of chains `rows` (a 1-D index tensor)."""
    return map_tensors(lambda leaf: leaf[rows.to(leaf.device)], tree)


def scatter_chains(tree: Any, rows: torch.Tensor, sub_tree: Any) -> Any:
    """A copy of `tree` with chains `rows` replaced by `sub_tree` (as returned by `gather_chains`)."""

    def put(leaf, sub_leaf):
        if not isinstance(leaf, torch.Tensor):
            return leaf
        out = leaf.clone()
        out[rows.to(leaf.device)] = sub_leaf
        return out

    return map_structure(put, tree, sub_tree)


def flatten_info(info: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a step's info record into `{name: tensor[C]}` (the one walk that needs leaf paths,
    so it does not go through `map_structure`).

    NamedTuple fields and dict entries keep their names; nested records of a cycle are
    prefixed by their position (`k0.accepted`, `k1.accepted`, ...).  Non-tensor leaves are dropped.
    """
    flat: dict[str, torch.Tensor] = {}
    if isinstance(info, torch.Tensor):
        flat[prefix.rstrip(".")] = info
    elif isinstance(info, dict):
        for key, value in info.items():
            flat.update(flatten_info(value, f"{prefix}{key}."))
    elif isinstance(info, tuple) and hasattr(info, "_fields"):
        for key, value in zip(info._fields, info):
            if key in ("proposal", "info"):
                flat.update(flatten_info(value, prefix))
            elif key == "infos":
                for index, sub in enumerate(value):
                    flat.update(flatten_info(sub, f"{prefix}k{index}."))
            else:
                flat.update(flatten_info(value, f"{prefix}{key}."))
    return flat
