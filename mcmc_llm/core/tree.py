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


def select(mask: torch.Tensor, new: Any, old: Any) -> Any:
    """Chain-wise `where`: `new[c]` if `mask[c]` else `old[c]`, recursively over fields.

    Non-tensor leaves (ints, strings, models) must be equal in `new` and `old`; they are shared.
    """
    if isinstance(new, torch.Tensor):
        if new.shape != old.shape:
            raise ValueError(
                f"cannot select between tensors of shapes {tuple(new.shape)} and {tuple(old.shape)}; "
                "a proposal must return a position with the same shapes as the current one"
            )
        shaped = mask.reshape(mask.shape + (1,) * (new.dim() - 1))
        return torch.where(shaped, new, old)
    if dataclasses.is_dataclass(new) and not isinstance(new, type):
        changes = {
            field.name: select(mask, getattr(new, field.name), getattr(old, field.name))
            for field in dataclasses.fields(new)
            if field.init
        }
        return dataclasses.replace(new, **changes)
    if isinstance(new, tuple) and hasattr(new, "_fields"):
        return type(new)(*(select(mask, n, o) for n, o in zip(new, old)))
    if isinstance(new, (tuple, list)):
        return type(new)(select(mask, n, o) for n, o in zip(new, old))
    if isinstance(new, dict):
        return {key: select(mask, new[key], old[key]) for key in new}
    return new


def num_chains(position: Any) -> int:
    """Size of the leading (chain) axis of the first tensor found in `position`."""
    if isinstance(position, torch.Tensor):
        if position.dim() == 0:
            raise ValueError("a position must be batched over chains: got a 0-dimensional tensor")
        return position.shape[0]
    if dataclasses.is_dataclass(position) and not isinstance(position, type):
        leaves = [getattr(position, f.name) for f in dataclasses.fields(position)]
    elif isinstance(position, dict):
        leaves = list(position.values())
    elif isinstance(position, (tuple, list)):
        leaves = list(position)
    else:
        leaves = []
    for leaf in leaves:
        try:
            return num_chains(leaf)
        except ValueError:
            continue
    raise ValueError(f"no tensor with a chain axis found in position of type {type(position).__name__}")


def map_tensors(fn, tree: Any) -> Any:
    """Apply `fn` to every tensor leaf of `tree`, keeping its structure."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        changes = {f.name: map_tensors(fn, getattr(tree, f.name)) for f in dataclasses.fields(tree) if f.init}
        return dataclasses.replace(tree, **changes)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(map_tensors(fn, leaf) for leaf in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(map_tensors(fn, leaf) for leaf in tree)
    if isinstance(tree, dict):
        return {key: map_tensors(fn, value) for key, value in tree.items()}
    return tree


def concat_chains(trees: Sequence[Any]) -> Any:
    """One tree holding the chains of `trees` (same structure and leaf shapes past the chain axis), in order."""
    first = trees[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(trees))
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        changes = {f.name: concat_chains([getattr(t, f.name) for t in trees]) for f in dataclasses.fields(first) if f.init}
        return dataclasses.replace(first, **changes)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(concat_chains(leaves) for leaves in zip(*trees)))
    if isinstance(first, (tuple, list)):
        return type(first)(concat_chains(leaves) for leaves in zip(*trees))
    if isinstance(first, dict):
        return {key: concat_chains([t[key] for t in trees]) for key in first}
    return first


def concat_padded(trees: Sequence[Any]) -> Any:
    """`concat_chains` of trees whose 2-D leaves (per-token records [C, W]) may differ in width W:
    those are right-padded with zeros to the widest first."""
    widths = []
    for tree in trees:
        map_tensors(lambda leaf: widths.append(leaf.shape[1]) if leaf.dim() == 2 else None, tree)
    width = max(widths, default=0)
    pad = lambda leaf: torch.nn.functional.pad(leaf, (0, width - leaf.shape[1])) if leaf.dim() == 2 else leaf  # noqa: E731
    return concat_chains([map_tensors(pad, tree) for tree in trees])


def gather_chains(tree: Any, rows: torch.Tensor) -> Any:
    """The sub-batch of chains `rows` (a 1-D index tensor)."""
    return map_tensors(lambda leaf: leaf[rows.to(leaf.device)], tree)


def scatter_chains(tree: Any, rows: torch.Tensor, sub_tree: Any) -> Any:
    """A copy of `tree` with chains `rows` replaced by `sub_tree` (as returned by `gather_chains`)."""
    if isinstance(tree, torch.Tensor):
        out = tree.clone()
        out[rows.to(tree.device)] = sub_tree
        return out
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        changes = {
            f.name: scatter_chains(getattr(tree, f.name), rows, getattr(sub_tree, f.name))
            for f in dataclasses.fields(tree)
            if f.init
        }
        return dataclasses.replace(tree, **changes)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(scatter_chains(a, rows, b) for a, b in zip(tree, sub_tree)))
    if isinstance(tree, (tuple, list)):
        return type(tree)(scatter_chains(a, rows, b) for a, b in zip(tree, sub_tree))
    if isinstance(tree, dict):
        return {key: scatter_chains(tree[key], rows, sub_tree[key]) for key in tree}
    return tree


def flatten_info(info: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a step's info record into `{name: tensor[C]}`.

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
