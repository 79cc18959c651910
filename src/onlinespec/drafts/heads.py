"""Feature-level head drafts by kind: build a fresh head for a target, or load a warmed-up one from a directory.

Specs: `KIND` (the head bundled with onlinespec for the embedded default target, if there is one),
`KIND:DIR` (a head saved by `onlinespec warmup`) or `KIND:fresh` (untrained), for each kind in HEAD_KINDS.
Bundled heads live in `onlinespec/heads/<target>-<kind>/` beside a warmup.json that records how they were made.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from onlinespec.drafts.eagle import EagleDraft, EagleHead
from onlinespec.drafts.head_store import VOCAB_KEY, load_into, read_head
from onlinespec.drafts.hydra import HydraHead
from onlinespec.drafts.medusa import DepthHeadsDraft, MedusaHead
from onlinespec.errors import UserError

# kind -> (head module class, draft class). Each head class takes (target, vocab_ids, **store_config).
HEAD_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "eagle": (EagleHead, EagleDraft),
    "medusa": (MedusaHead, DepthHeadsDraft),
    "hydra": (HydraHead, DepthHeadsDraft),
}


def build_head(kind: str, target: nn.Module, vocab_ids: torch.Tensor | None = None, **layout) -> nn.Module:
    if kind not in HEAD_KINDS:
        raise UserError(f"unknown head kind '{kind}': choose one of {', '.join(HEAD_KINDS)}")
    head_cls, _ = HEAD_KINDS[kind]
    return head_cls(target, vocab_ids, **layout)


def load_head(directory: str | Path, target: nn.Module, kind: str | None = None) -> nn.Module:
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
    head_cls = HEAD_KINDS.get(saved_kind, (None,))[0]
    if head_cls is None:
        raise UserError(f"'{directory}' holds an unknown head kind '{saved_kind}'")
    layout = {key: config[key] for key in head_cls.layout_keys if key in config}
    head = build_head(saved_kind, target, tensors.get(VOCAB_KEY), **layout)
    load_into(head, tensors, str(directory))
    return head.eval()


BUNDLED = Path(__file__).resolve().parent.parent / "heads"


def has_bundled_head(kind: str, target_spec: str) -> bool:
    return (BUNDLED / f"{target_spec}-{kind}" / "config.json").is_file()


def bundled_head_dir(kind: str, target_spec: str) -> Path:
    directory = BUNDLED / f"{target_spec}-{kind}"
    if not (directory / "config.json").is_file():
        raise UserError(
            f"no bundled {kind} head for target '{target_spec}': warm one up with "
            f"`onlinespec warmup --target {target_spec} --draft {kind} --out DIR` and pass --draft {kind}:DIR "
            f"(or --draft {kind}:fresh for an untrained head)"
        )
    return directory


def make_head_draft(spec: str, target: nn.Module, target_spec: str):
    """`kind`, `kind:DIR` or `kind:fresh` -> a draft object implementing the Draft protocol."""
    kind, _, where = spec.partition(":")
    if where == "fresh":
        head = build_head(kind, target).eval()
    else:
        head = load_head(where or bundled_head_dir(kind, target_spec), target, kind)
    return HEAD_KINDS[head.kind][1](head, name=spec)
