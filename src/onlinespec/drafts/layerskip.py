"""Layer-skip self-draft: the target's first N decoder layers, sharing its embeddings, final norm and LM head.

The N layers are the draft's own copies (an online learner may change them without touching the target);
everything else is the target's very modules, not copies.
"""

from __future__ import annotations

import copy

import torch

from onlinespec.drafts.causal_lm import CausalLMDraft, target_vocab_size
from onlinespec.drafts.registry import DraftSpec
from onlinespec.errors import UserError
from onlinespec.models.resolve import LoadedModel


def make_layerskip_draft(spec: DraftSpec, target: LoadedModel, dtype: str) -> CausalLMDraft:
    """`layerskip:N` (the registry checked that N is a whole number): only the N copied layers are trainable."""
    model = build_layerskip_model(target.model, int(spec.argument))
    shared = {id(p) for p in target.model.parameters()}
    own_layers = [n for n, p in model.named_parameters() if id(p) not in shared]
    return CausalLMDraft(model, target_vocab_size(target), name=spec.text, trainable=own_layers)


def build_layerskip_model(target: torch.nn.Module, num_layers: int) -> torch.nn.Module:
    """Return a causal LM of the target's class running only its first `num_layers` decoder layers."""
    decoder = target.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UserError(f"layer-skip drafts need a decoder with a `layers` list; {type(target).__name__} has none")
    total = len(layers)
    if not 1 <= num_layers < total:
        raise UserError(f"layerskip:N needs 1 <= N < {total} (the target has {total} decoder layers), got {num_layers}")
    # deepcopy with a memo that maps every module except the decoder layers to itself: those are shared by
    # reference, while the first N layers (and the thin wrapper objects) are copied.
    memo: dict[int, object] = {}
    for module in target.modules():
        memo[id(module)] = module
    for param in target.parameters():
        memo[id(param)] = param
    for buf in target.buffers():
        memo[id(buf)] = buf
    for wrapper in (target, decoder, layers):
        del memo[id(wrapper)]
    for layer in layers[:num_layers]:
        for obj in (layer, *layer.modules(), *layer.parameters(), *layer.buffers()):
            memo.pop(id(obj), None)
    decoder.layers = torch.nn.ModuleList(layers[:num_layers])
    try:
        draft = copy.deepcopy(target, memo)
    finally:
        decoder.layers = layers
    draft.config.num_hidden_layers = num_layers
    if getattr(draft.config, "layer_types", None):
        draft.config.layer_types = draft.config.layer_types[:num_layers]
    return draft
