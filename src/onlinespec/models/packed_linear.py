"""Linear layers whose bf16 weights are pre-packed for oneDNN: the "packed" weight layout (models/weight_layout.py).

`F.linear` on a bf16 CPU tensor hands oneDNN a plain [out, in] matrix, which it re-blocks for its kernel on every
call. Packing once (`torch.ops.mkldnn._reorder_linear_weight`, what `torch.compile`'s CPU freezing pass does)
and calling the packed kernel (`torch.ops.mkldnn._linear_pointwise`) skips that. Measured on the avx512_bf16 AMD
EPYC, 2 threads (`benchmarks/bench_packed_linear.py`): a [1536, 576] product over 1 token 42 -> 24 us, 157 such
weights (265 MB, streamed from memory) 11.7 -> 8.2 ms, bit-identical outputs at 1 to 300 tokens; our
autoregressive decoding of SmolLM2-135M 1.17x faster end to end (docs/benchmarks.md). Float32 is not packed:
MKL's packed float32 kernel ran no faster than `F.linear` in a scratch measurement on the same CPU.

Sibling layers that read the same input (q, k, v; gate, up) share one packed product over their stacked weights
instead of a pack each (models/sibling_linears.py): 2 kernel calls a layer instead of 5, bit-identical outputs.

The module stays an `nn.Linear` with its parameter (names, shapes and state dicts unchanged; drafts that read the
LM head's rows, or train through a target layer, see the plain weight). The packed copy is used only for inference
(no gradient asked for: the packed kernel has no backward) on a bf16 CPU input with a bf16 weight; otherwise the
module runs `F.linear` on its weight. A weight changed since it was packed (another tensor, other memory, or a
new version: a draft head's online update published in place) is packed again at its next inference call, so a
pack is never stale; a tensor made under `torch.inference_mode` keeps no version counter, so an in-place change
of such a weight inside inference mode would go unseen (nothing here changes weights that way). The packed copy
costs as much memory as the weight.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from onlinespec.models.sibling_linears import SiblingGroup, fingerprint, sibling_groups

PACKED_DTYPE = torch.bfloat16


def packing_unavailable(model: nn.Module) -> str | None:
    """Why `model`'s linear weights cannot be packed here (a sentence for an error message), or None if they can."""
    weight = next((m.weight for m in model.modules() if isinstance(m, nn.Linear)), None)
    if weight is None:
        return "the model has no linear layers"
    if weight.dtype != PACKED_DTYPE:
        dtype = str(weight.dtype).removeprefix("torch.")
        return f"packed weights need bfloat16 (the model is {dtype}: --dtype bfloat16)"
    if weight.device.type != "cpu":
        return f"packed weights are a CPU layout (the model is on {weight.device.type})"
    mkldnn = torch.ops.mkldnn
    if not (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_linear_pointwise")):
        return "this torch build has no oneDNN linear kernel"
    if not mkldnn._is_mkldnn_bf16_supported():
        return "this CPU has no oneDNN bf16 support"
    return None


class PackedLinear(nn.Linear):
    """An nn.Linear with a oneDNN-packed copy of its bf16 weight, used where valid (module docstring).

    x [..., in] -> [..., out], exactly `F.linear(x, weight, bias)`.
    """

    packed: torch.Tensor | None = None
    packed_for: tuple = ()
    group: SiblingGroup | None = None  # siblings computed as one product (then no pack of its own)
    group_index: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The hot path (every linear of every decoding step): the weight read once, cheap checks first.
        weight = self._parameters["weight"]
        usable = x.dtype is PACKED_DTYPE and weight.dtype is PACKED_DTYPE and x.is_cpu
        if usable and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            usable = False  # the packed kernel has no backward
        if not usable:
            return F.linear(x, weight, self.bias)
        if self.group is not None:
            return self.group.output(self.group_index, x)
        weight_now = fingerprint(weight)
        if self.packed_for != weight_now:  # never packed, or the weight changed since: pack it (again)
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
            self.packed_for = weight_now
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def __deepcopy__(self, memo: dict) -> nn.Module:
        """A copy without the packed tensor (oneDNN's opaque tensors cannot be copied); it shares the pack (or the
        siblings' group) only where it shares the weight (a memo that maps the frozen weight to itself, as the
        drafts' training copies do): the group's slice for it is then computed from that same weight."""
        packed, group = self.packed, self.group
        self.packed, self.group = None, None
        try:
            cls, self.__class__ = self.__class__, nn.Linear
            clone = copy.deepcopy(self, memo)
        finally:
            self.__class__, self.packed, self.group = cls, packed, group
        clone.__class__ = PackedLinear
        shared = clone.weight is self.weight
        clone.packed, clone.packed_for = (packed, self.packed_for) if shared and packed is not None else (None, ())
        clone.group = group if shared else None
        return clone


def pack_linears(model: nn.Module) -> int:
    """Pack every nn.Linear of `model` in place (a weight shared by several layers is packed once, sibling layers
    as one group, one already packed is left as it is); returns the number of modules packed. Call
    `packing_unavailable` first: this assumes bf16 weights on a CPU oneDNN supports."""
    packs: dict[int, torch.Tensor] = {}
    grouped: set[int] = set()
    count = 0
    for members in sibling_groups(model):
        if all(isinstance(m, PackedLinear) and m.group is not None for m in members):
            continue  # grouped already
        group = SiblingGroup(members)
        group.pack()  # now, as every other layer is packed: not at the first (timed) forward
        for index, module in enumerate(members):
            module.__class__ = PackedLinear
            module.packed, module.packed_for = None, ()
            module.group, module.group_index = group, index
            grouped.add(id(module))
            count += 1
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module) not in grouped:
            weight = module.weight
            if isinstance(module, PackedLinear) and module.packed_for == fingerprint(weight):
                continue
            if id(weight) not in packs:
                packs[id(weight)] = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1)
            module.__class__ = PackedLinear
            module.packed, module.packed_for = packs[id(weight)], fingerprint(weight)
            count += 1
    return count


def unpack_linears(model: nn.Module) -> None:
    """Turn every PackedLinear of `model` back into a plain nn.Linear (the packed copies are freed)."""
    for module in model.modules():
        if isinstance(module, PackedLinear):
            module.packed, module.packed_for, module.group = None, (), None
            del module.packed, module.packed_for, module.group
            module.__dict__.pop("group_index", None)
            module.__class__ = nn.Linear


def is_packed(model: nn.Module) -> bool:
    """Whether `model`'s first linear layer holds a valid pack (pack_linears packs them all alike)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if not isinstance(module, PackedLinear):
                return False
            return module.group is not None or module.packed_for == fingerprint(module.weight)  # a group repacks
    return False
