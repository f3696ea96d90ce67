"""Rows of suffix plans, with each plan's samplers kept with its own rows.

A `SuffixPlan` (`mcmc_llm.core.protocols`) says that chain c's suffix is drawn by
`samplers[sampler_index[c]]`.  The tuple `samplers` is not batched over chains, so the generic
chain-wise tree operations (`mcmc_llm.core.tree`), which keep a non-tensor leaf of the first tree,
would pair one plan's rows with another plan's samplers.  A driver that batches the requests of
several `plan` calls (asynchronous chains: plans of other steps, other stages, pre-fetched ones)
uses these instead.  Two forms of plan are kept as they are, because proposals read them:

* **shared samplers**: `samplers` is the proposal's own tuple and `sampler_index` may mean
  something to it (`experiments/custom_kernel.py`'s draft proposal reads index 1 as "drafted").
  Sub-plans keep the tuple and the indices; plans with equal tuples concatenate without shifting.
* **one sampler per row** (`samplers` of length C, `sampler_index = arange(C)`, e.g. built per
  call as `(s,) * C`): sub-plans and concatenations stay in that form, one sampler per row, in row
  order.  A plan is taken to be in this form when its tuple repeats a sampler or it has one row
  (`_per_row`); C > 1 distinct samplers indexed 0..C-1 are read as a shared tuple, which is right
  either way for `samplers[sampler_index[c]]`.

Anything else (plans of different calls with different tuples) is not concatenated: joining the
tuples would change the indices, which `complete` may read, so `plan_rows` keeps such plans apart.

* `gather_plan(plan, rows)`: rows of one plan (nested plan records, such as a mixture's parts, too).
* `concat_plans(plans)`: the rows of several plans in order (`PlansDiffer` when their samplers
  differ as above, or another non-tensor field does: a plan's settings are never replaced).
* `plan_rows(parts)`: rows `(plan, row)` of many plans as few batches, `[(plan, positions)]`.

With these, `samplers[sampler_index[c]]` is, for every row c in every batch, the sampler of the
`plan` call that made row c, whatever the batching: what makes every driver's steps MH steps for
the stage's proposal, and what `tests/proposals/test_stage_plans.py` checks.
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


def _per_row(plan: Any) -> bool:
    """One sampler per row: `samplers` of length C, `sampler_index = arange(C)`, and the tuple
    repeats a sampler or C = 1.  (C > 1 distinct samplers indexed 0..C-1 are read as the proposal's
    own tuple: its indices may mean something, and keeping them is always right for
    `samplers[sampler_index]`.)"""
    index, samplers = plan.sampler_index, plan.samplers
    if len(samplers) != len(index) or (len(index) > 1 and not _repeats(samplers)):
        return False
    return bool((index.cpu() == torch.arange(len(index))).all())


def _repeats(samplers: tuple) -> bool:
    """Some sampler occurs twice (by ==; `Sampler`s hash by their LM's identity and their rule)."""
    try:
        return len(set(samplers)) < len(samplers)
    except TypeError:  # an unhashable sampler: compare pairwise
        return any(_equal(a, b) for i, a in enumerate(samplers) for b in samplers[i + 1:])


def gather_plan(plan: Any, rows: torch.Tensor) -> Any:
    """The sub-plan of chains `rows`; every plan record in it keeps its form (module docstring)."""
    rows = torch.as_tensor(rows, dtype=torch.long)

    def node(tree):
        if not is_plan(tree):
            return NotImplemented
        fields = {name: gather_plan(value, rows) for name, value in _fields(tree).items() if name not in _PLAN_FIELDS}
        index = tree.sampler_index
        if _per_row(tree):
            samplers, index = tuple(tree.samplers[i] for i in rows.tolist()), torch.arange(len(rows), device=index.device)
        else:
            samplers, index = tree.samplers, index[rows.to(index.device)]
        return _rebuild(tree, {**fields, "samplers": samplers, "sampler_index": index})

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
        indices = [tree.sampler_index for tree in trees]
        if all(_per_row(tree) for tree in trees):  # (one-row plans are in both forms: this one keeps a per-call plan's)
            samplers = sum((tuple(tree.samplers) for tree in trees), ())
            indices = [torch.arange(len(samplers), device=indices[0].device)]
        elif all(_equal(tree.samplers, trees[0].samplers) for tree in trees[1:]):
            samplers = trees[0].samplers
        else:
            raise PlansDiffer("plans of different calls with different samplers")
        return _rebuild(trees[0], {**fields, "samplers": samplers, "sampler_index": torch.cat(indices)})

    def leaf(*leaves):
        return torch.cat(leaves) if isinstance(leaves[0], torch.Tensor) else _same(leaves)

    return map_structure(leaf, *plans, node=node)


def plan_rows(parts: Sequence[tuple[Any, int]]) -> list[tuple[Any, list[int]]]:
    """Rows `(plan, row)` of many plans as few batches: `[(plan, positions)]`, where `plan`'s rows are
    `parts[positions[0]], parts[positions[1]], ...`.  One batch when the plans concatenate without
    shifting indices (`concat_plans`), else one per `plan` call."""
    by_plan: dict[int, list[int]] = {}
    for position, (plan, _) in enumerate(parts):
        by_plan.setdefault(id(plan), []).append(position)
    groups = [(gather_plan(parts[positions[0]][0], torch.as_tensor([parts[i][1] for i in positions])), positions)
              for positions in by_plan.values()]
    if len(groups) == 1:
        return groups
    try:
        merged = concat_plans([plan for plan, _ in groups])
    except PlansDiffer:  # kept apart: `complete` may read `sampler_index`
        return groups
    order = [position for _, positions in groups for position in positions]
    inverse = torch.argsort(torch.as_tensor(order))
    return [(gather_plan(merged, inverse), list(range(len(parts))))]


__all__ = ["PlansDiffer", "concat_plans", "gather_plan", "is_plan", "plan_rows"]
