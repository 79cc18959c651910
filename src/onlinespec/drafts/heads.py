"""Feature-level head drafts: build a fresh head of a registered kind for a target, or load a warmed-up one.

Specs (drafts/registry.py): `KIND` (the head bundled with onlinespec for the target, drafts/bundled.py),
`KIND:DIR` (a head saved by `onlinespec warmup`) or `KIND:fresh` (untrained), for each head kind in the registry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from onlinespec.drafts.bundled import bundled_head_dir
from onlinespec.drafts.head_draft import HeadDraft
from onlinespec.drafts.head_protocol import Head
from onlinespec.drafts.head_store import VOCAB_KEY, load_into, read_head
from onlinespec.drafts.registry import HEAD_KIND_NAMES, DraftSpec, head_kind_entry
from onlinespec.errors import UserError
from onlinespec.models.resolve import LoadedModel


def build_head(kind: str, target: nn.Module, vocab_ids: torch.Tensor | None = None, **layout) -> Head:
    """A fresh (untrained) head of `kind` for `target`; vocab_ids [Vd] for a reduced draft vocabulary."""
    return head_kind_entry(kind).head_class(target, vocab_ids, **layout)


def head_feature_layers(kind: str, target: nn.Module) -> tuple[int, ...]:
    """The target hidden states (decoding/draft.py `feature_layers`) a default head of `kind` reads."""
    rule = getattr(head_kind_entry(kind).head_class, "feature_layers_for", None)
    return tuple(rule(target)) if rule is not None else (-1,)


def load_head(directory: str | Path, target: nn.Module, kind: str | None = None) -> Head:
    """The head saved in `directory`, attached to `target` (whose frozen parts it shares)."""
    config, tensors = read_head(directory)
    saved_kind = config.get("kind")
    if kind is not None and saved_kind != kind:
        raise UserError(f"'{directory}' holds a {saved_kind} head, not {kind}: use --draft {saved_kind}:{directory}")
    target_vocab = target.get_output_embeddings().weight.shape[0]
    if config.get("hidden_size") != target.config.hidden_size or config.get("target_vocab_size") != target_vocab:
        raise UserError(
            f"the head in '{directory}' was trained for a target with hidden size {config.get('hidden_size')} and "
            f"vocabulary {config.get('target_vocab_size')}; this target has {target.config.hidden_size} and "
            f"{target_vocab}: warm up a head for it with `onlinespec warmup`"
        )
    if saved_kind not in HEAD_KIND_NAMES:
        raise UserError(f"'{directory}' holds an unknown head kind '{saved_kind}'")
    head_cls = head_kind_entry(saved_kind).head_class
    layout = {key: config[key] for key in head_cls.layout_keys if key in config}
    head = head_cls(target, tensors.get(VOCAB_KEY), **layout)
    load_into(head, tensors, str(directory))
    return head.eval()


def make_head_draft(spec: str, target: nn.Module, target_spec: str) -> HeadDraft:
    """`kind`, `kind:DIR` or `kind:fresh` -> a draft of that head kind for `target` (named `target_spec`)."""
    name, _, where = spec.partition(":")
    kind = head_kind_entry(name)
    if where == "fresh":
        head = build_head(kind.name, target).eval()
    else:
        head = load_head(where or bundled_head_dir(kind.name, target_spec), target, kind.name)
    pack_like_target(head, target)
    return kind.draft_class(head, name=spec)


def pack_like_target(head: nn.Module, target: nn.Module) -> None:
    """A head drafts in its target's dtype: where the target's bf16 weights are packed (models/packed_linear.py),
    pack the head's linear layers too. Its online updates are published in place, and a changed weight is packed
    again at its next inference call; its training copy (float32 masters) runs plain `F.linear`."""
    from onlinespec.models.packed_linear import pack_linears, packing_unavailable
    from onlinespec.models.weight_layout import PACKED, weight_layout

    if weight_layout(target) == PACKED and packing_unavailable(head) is None:
        pack_linears(head)


def build_head_draft(spec: DraftSpec, target: LoadedModel, dtype: str) -> HeadDraft:
    """The registry's builder for every head kind (a head takes its dtype from the target's modules)."""
    return make_head_draft(spec.text, target.model, target.spec)
