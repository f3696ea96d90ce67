"""Rows of suffix plans, with each plan's samplers kept with its own rows.

A `SuffixPlan` (`mcmc_llm.core.protocols`) says that chain c's suffix is drawn by
`samplers[sampler_index[c]]`.  The tuple `samplers` is not batched over chains, so the generic
chain-wise tree operations (`mcmc_llm.core.tree`), which keep a non-tensor leaf of the first tree,
would pair one plan's rows with another plan's samplers.  A driver that batches the requests of
several `plan` calls (asynchronous chains: plans of other steps, other stages, pre-fetched ones)
must use these instead:

* `gather_plan(plan, rows)`: rows of one plan; every plan record in it (nested ones, such as a
  mixture's components, too) keeps the samplers its rows use, in their order in the tuple, with
  `sampler_index` renumbered.  A plan with one sampler per row (`samplers` of length C,
  `sampler_index = arange(C)`) keeps one per row.
* `concat_plans(plans)`: the rows of several plans in order, samplers concatenated and each plan's
  indices shifted by the samplers before it.  Other non-tensor fields must be equal in every
  plan (`PlansDiffer` otherwise): a plan's own settings are never silently replaced.
* `plan_rows(parts)`: rows `(plan, row)` of many plans, merged where they can be
  (`[(merged plan, positions in parts)]`).

With these, `samplers[sampler_index[c]]` names, for every row c, the sampler of the `plan` call
that made row c, whatever the batching: this is what makes every driver's steps MH steps for the
stage's proposal, and what the driver-identity tests check (`tests/test_stage_plans.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

from mcmc_llm.core.tree import map_structure

_PLAN_FIELDS = ("samplers", "sampler_index")


class PlansDiffer(ValueError):
    """Plans whose non-tensor fields (other than `samplers`) differ: they cannot be one batch."""


def is_plan(node: Any) -> bool:
    """A record with `samplers` and `sampler_index`: a `SuffixPlan` (or a part of one)."""
    record = (dataclasses.is_dataclass(node) and not isinstance(node, type)) or (isinstance(node, tuple) and hasattr(node, "_fields"))
    return record and all(hasattr(node, name) for name in _PLAN_FIELDS)


def _fields(plan: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(plan):
        return {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan) if f.init}
    return dict(zip(plan._fields, plan))


def _rebuild(plan: Any, fields: dict[str, Any]) -> Any:
    return dataclasses.replace(plan, **fields) if dataclasses.is_dataclass(plan) else plan._replace(**fields)


def gather_plan(plan: Any, rows: torch.Tensor) -> Any:
    """The sub-plan of chains `rows`, each plan record keeping the samplers its rows use (module docstring)."""
    rows = torch.as_tensor(rows, dtype=torch.long)

    def node(tree):
        if not is_plan(tree):
            return NotImplemented
        fields = {name: gather_plan(value, rows) for name, value in _fields(tree).items() if name not in _PLAN_FIELDS}
        index = tree.sampler_index[rows.to(tree.sampler_index.device)]
        used, renumbered = torch.unique(index.cpu(), return_inverse=True)
        samplers = tuple(tree.samplers[i] for i in used.tolist())
        return _rebuild(tree, {**fields, "samplers": samplers, "sampler_index": renumbered.to(index)})

    return map_structure(lambda leaf: leaf[rows.to(leaf.device)] if isinstance(leaf, torch.Tensor) else leaf, plan, node=node)


def _same(leaves: tuple) -> Any:
    first = leaves[0]
    for other in leaves[1:]:
        if other is not first and not _equal(other, first):
            raise PlansDiffer(f"plans differ in a non-tensor field ({first!r} vs {other!r})")
    return first


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an object without a usable == is equal only to itself
        return False


def concat_plans(plans: Sequence[Any]) -> Any:
    """One plan holding the rows of `plans` in order, every row still naming its own sampler (module docstring)."""
    plans = list(plans)

    def node(*trees):
        if not is_plan(trees[0]):
            return NotImplemented
        parts = [_fields(tree) for tree in trees]
        fields = {name: concat_plans([part[name] for part in parts]) for name in parts[0] if name not in _PLAN_FIELDS}
        samplers, indices = (), []
        for tree in trees:
            indices.append(tree.sampler_index + len(samplers))
            samplers += tuple(tree.samplers)
        return _rebuild(trees[0], {**fields, "samplers": samplers, "sampler_index": torch.cat(indices)})

    def leaf(*leaves):
        return torch.cat(leaves) if isinstance(leaves[0], torch.Tensor) else _same(leaves)

    return map_structure(leaf, *plans, node=node)


def plan_rows(parts: Sequence[tuple[Any, int]]) -> list[tuple[Any, list[int]]]:
    """Rows `(plan, row)` of many plans as few batches: `[(plan, positions)]`, where `plan`'s rows are
    `parts[positions[0]], parts[positions[1]], ...`.  One batch when the plans can be concatenated
    (`concat_plans`), else one per `plan` call."""
    by_plan: dict[int, list[int]] = {}
    for position, (plan, _) in enumerate(parts):
        by_plan.setdefault(id(plan), []).append(position)
    groups = [(gather_plan(parts[positions[0]][0], torch.as_tensor([parts[i][1] for i in positions])), positions)
              for positions in by_plan.values()]
    if len(groups) == 1:
        return groups
    try:
        merged = concat_plans([plan for plan, _ in groups])
    except PlansDiffer:
        return groups
    order = [position for _, positions in groups for position in positions]
    inverse = torch.argsort(torch.as_tensor(order))
    return [(gather_plan(merged, inverse), list(range(len(parts))))]


__all__ = ["PlansDiffer", "concat_plans", "gather_plan", "is_plan", "plan_rows"]
