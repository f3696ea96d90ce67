"""Linear layers on weights packed once for oneDNN (CPU, float32).

A decoding step multiplies a few rows by every weight matrix of the model: `y = x W^T + b` with
x of shape [rows, in] and W of shape [out, in].  PyTorch's CPU `linear` hands this to a BLAS
`gemm` that repacks W into its blocked layout on every call, so a step at 2-8 rows spends most of
its time copying weights (measured on the embedded model: `docs/performance.md`, "Packed linear
layers").  `set_packed_linears` reorders each float32 weight once into oneDNN's blocked layout
(`torch.ops.mkldnn._reorder_linear_weight`, the layout PyTorch's own CPU compiler uses for frozen
weights) and computes the same product from it (`torch.ops.mkldnn._linear_pointwise`).

The product is the same function of x, W and b; only the order of floating-point additions
differs (results agree with `torch.nn.functional.linear` to float32 rounding, which `set_packed_linears`
checks on every layer before using it).  The packed copy is an extra copy of the weights (the
original parameter stays, for tied embeddings and `state_dict`); a layer whose weight changed
afterwards (in place, or moved to another device or dtype) is repacked or, off the CPU or in
float64, computed by `torch.nn.functional.linear` as before.  Gradients are not supported through
the packed path: with autograd recording, layers use `linear`.
"""

from __future__ import annotations

import torch

MODES = ("auto", "on", "off")
AUTO_LIMIT_BYTES = 2 * 2**30  # "auto" packs models whose linear weights take at most this much (the copy doubles it)


def supported() -> bool:
    """Whether this PyTorch build has the oneDNN packed linear operators."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and mkldnn is not None
                    and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


class PackedLinear(torch.nn.Linear):
    """`torch.nn.Linear` sharing the original parameters, with the weight also kept in oneDNN's
    blocked layout.  `state_dict`, parameters and tied weights are those of the original layer."""

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> "PackedLinear":
        packed = _sharing(cls, linear)
        packed.repack()
        return packed

    def repack(self) -> None:
        """Reorder the current weight into the blocked layout."""
        weight = self.weight
        self._blocked = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        self._packed_from = (weight.data_ptr(), weight._version)  # new storage (a move) or an in-place write changes it

    def _usable(self, x: torch.Tensor) -> bool:
        weight = self.weight
        if x.dtype != torch.float32 or weight.dtype != torch.float32 or weight.device.type != "cpu":
            return False
        if torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad):
            return False
        if weight._version != self._packed_from[1] or weight.data_ptr() != self._packed_from[0]:
            self.repack()
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._usable(x):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.mkldnn._linear_pointwise(x, self._blocked, bias, "none", [], "")


def _agrees(layer: PackedLinear) -> bool:
    """One random input through both paths: equal to float32 rounding (relative to the output scale)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, layer.in_features, generator=generator)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
        got = layer(x)
    scale = expected.abs().max().item() + 1.0
    return got.shape == expected.shape and bool((got - expected).abs().max().item() <= 1e-4 * scale)


def _sharing(cls, linear: torch.nn.Linear) -> torch.nn.Linear:
    """A `cls` layer holding `linear`'s own parameters (no copy; ties are kept)."""
    layer = cls.__new__(cls)
    torch.nn.Module.__init__(layer)
    layer.in_features, layer.out_features = linear.in_features, linear.out_features
    layer.weight, layer.bias = linear.weight, linear.bias
    return layer


def _linear_layers(model: torch.nn.Module, kind: type) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children() if type(child) is kind]


def set_packed_linears(model: torch.nn.Module, mode: str = "auto") -> int:
    """Make the float32 CPU `nn.Linear` layers of `model` `PackedLinear` ("on", "auto") or plain
    again ("off"); returns how many layers are packed afterwards.

    "on" packs (an error if this PyTorch cannot); "auto" packs when supported and the linear
    weights take at most `AUTO_LIMIT_BYTES`.  Every packed layer is checked against
    `torch.nn.functional.linear` on a random input; if any disagrees, none is packed (an error for
    "on").  Parameters are shared, never copied, so tied weights stay tied."""
    if mode not in MODES:
        raise ValueError(f"unknown packed_linear {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "off":
        for parent, name, child in _linear_layers(model, PackedLinear):
            setattr(parent, name, _sharing(torch.nn.Linear, child))
        return 0
    layers = [(parent, name, child) for parent, name, child in _linear_layers(model, torch.nn.Linear)
              if child.weight.device.type == "cpu" and child.weight.dtype == torch.float32]
    already = len({id(child) for _, _, child in _linear_layers(model, PackedLinear)})
    if not layers:
        return already
    if not supported():
        if mode == "on":
            raise NotImplementedError("packed linear layers need a PyTorch build with oneDNN (torch.backends.mkldnn)")
        return already
    unique = {id(child): child for _, _, child in layers}
    size = sum(child.weight.numel() * child.weight.element_size() for child in unique.values())
    if mode == "auto" and size > AUTO_LIMIT_BYTES:
        return already
    packed = {key: PackedLinear.from_linear(child) for key, child in unique.items()}
    if not all(_agrees(layer) for layer in packed.values()):
        if mode == "on":
            raise RuntimeError("oneDNN's packed linear disagrees with torch.nn.functional.linear on this machine")
        return already
    for parent, name, child in layers:
        setattr(parent, name, packed[id(child)])
    return already + len(packed)
