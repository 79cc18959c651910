"""Sibling linear layers computed as one packed product: an attention's q, k and v projections, an MLP's gate and
up projections (part of the "packed" weight layout, models/packed_linear.py).

A Llama-style decoder layer multiplies the same input by three weights in a row (q_proj, k_proj, v_proj of
[576, 576], [192, 576], [192, 576] in SmolLM2-135M) and, in its MLP, by two (gate_proj, up_proj). Each call to the
packed kernel (and to the module around it) has a fixed cost, a large part of a product this small (the [192, 576]
weight is 0.2 MB), so one product over the stacked weights ([960, 576] and [3072, 576]) and a split of its output
do the same arithmetic in 2 calls instead of 5. Measured on the avx512_bf16 EPYC, SmolLM2-135M bf16, 2 threads, both
ways interleaved (`python benchmarks/bench_siblings.py`, docs/benchmarks.md): a one-token step 7-8 % faster and
forwards over 3-8 tokens 4-8 %, logits bit-identical; Qwen2.5-Coder-1.5B unchanged (its step is its weights'
memory time).

The rule (`SiblingGroup.output`): the first sibling called with an input tensor computes the whole stacked
product for it and keeps the outputs; a sibling later called with that very tensor object takes its own slice; the
last sibling's call drops them. A call with any other tensor computes the whole product again, so a model that calls
its siblings in another order, or one of them alone, gets the same values at some extra cost. The outputs are
keyed by the tensor object, so an input changed in place between two siblings' calls would go unseen: no model here
does that (transformers' attention and MLP pass the normed hidden states untouched), and under `torch.inference_mode`
there is no version counter to check it by. The stacked weight is packed again whenever any sibling's weight or
bias changed (identity, memory or version, as a single packed weight), e.g. a draft head's online update published
in place. The stacked pack replaces the siblings' own packs: the memory is one packed copy of the weights, as before.
Two threads running the same layers at once (a draft and its training copy sharing frozen weights) stay correct:
a sibling takes a slice only of the outputs computed for its own input object, so at worst one of them computes
the product again.
"""

from __future__ import annotations

import torch
from torch import nn

# Names of sibling linear layers inside one module, in the order transformers' Llama-style models call them.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def fingerprint(tensor: torch.Tensor | None) -> tuple:
    """What must not change for a pack of `tensor` to stay valid: the tensor, its memory, version and dtype. A
    tensor made under `torch.inference_mode` keeps no version counter: its in-place changes are not seen."""
    if tensor is None:
        return ()
    version = None if tensor.is_inference() else tensor._version
    return (id(tensor), tensor.data_ptr(), version, tensor.dtype)


class SiblingGroup:
    """The stacked, packed weights of sibling linear layers and the outputs of the last input they were computed
    for (module docstring). members: the sibling nn.Linear modules, in call order."""

    def __init__(self, members: list[nn.Linear]) -> None:
        self.members = members
        self.sizes = [m.out_features for m in members]
        self.packed: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.packed_for: tuple = ()
        self.last: tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None  # (input, each sibling's output)

    def _fingerprints(self) -> tuple:
        """Every sibling's weight and bias fingerprint (read through `_parameters`: this runs on every product)."""
        prints = []
        for member in self.members:
            params = member._parameters
            prints.append(fingerprint(params["weight"]))
            if params.get("bias") is not None:
                prints.append(fingerprint(params["bias"]))
        return tuple(prints)

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Sibling `index`'s output for x [..., in] -> [..., out_index], exactly its own `F.linear`."""
        last = self.last
        if last is None or last[0] is not x:
            last = (x, self._product(x))
            self.last = last
        if index == len(self.members) - 1:
            self.last = None  # the last sibling has taken its slice: hold nothing between layers' calls
        return last[1][index]

    def pack(self) -> None:
        """Stack the siblings' weights (and biases) and pack them for oneDNN, unless packed for them already."""
        fingerprints = self._fingerprints()
        if self.packed_for == fingerprints:
            return
        stacked = torch.cat([m.weight.detach() for m in self.members])
        self.packed = torch.ops.mkldnn._reorder_linear_weight(stacked, 1)
        biases = [m.bias for m in self.members]
        self.bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
        self.packed_for = fingerprints

    def _product(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.pack()  # a no-op unless a sibling's weight changed since it was packed
        out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return out.split(self.sizes, dim=-1)


def sibling_groups(model: nn.Module) -> list[list[nn.Linear]]:
    """The sibling linear layers of `model` (SIBLINGS, found by name in each module), each list in call order; a
    set is grouped only where all its layers are nn.Linear of one dtype and input size, all or none with a bias."""
    groups = []
    for module in model.modules():
        for names in SIBLINGS:
            members = [getattr(module, name, None) for name in names]
            if not all(isinstance(m, nn.Linear) for m in members):
                continue
            same_input = len({m.in_features for m in members}) == 1
            same_bias = len({m.bias is None for m in members}) == 1
            same_dtype = len({m.weight.dtype for m in members}) == 1
            if same_input and same_bias and same_dtype:
                groups.append(members)
    return groups
