"""Draft kinds behind the engine's one protocol (`Draft`, decoding/draft.py), and the registry that builds them.

`make_draft(spec, target)` builds the draft a `--draft` spec names; `draft_spec_help()` lists every spec form.
The kinds, their syntax and builders are the entries of drafts/registry.py: `auto` (the default: `hybrid`,
prompt lookup + the EAGLE head bundled for the target, if there is one, else `lookup`), `none`, `layerskip:N`,
`lookup[:N[:E]]`, `hybrid[:HEAD]`, `eagle|eagle3|medusa|hydra[:DIR|:fresh]` and any model spec (an independent draft LM
with the target's tokenizer).
"""

from __future__ import annotations

from onlinespec.decoding.config import DEFAULT_K
from onlinespec.decoding.draft import Draft, Proposal
from onlinespec.drafts.causal_lm import CausalLMDraft, target_vocab_size
from onlinespec.drafts.head_protocol import Head, UnrolledHead, is_unrolled
from onlinespec.drafts.heads import build_head, load_head, make_head_draft
from onlinespec.drafts.independent import check_same_tokenizer
from onlinespec.drafts.layerskip import build_layerskip_model
from onlinespec.drafts.registry import (
    DEFAULT_DRAFT,
    DRAFT_KINDS,
    FALLBACK_DRAFT,
    HEAD_KIND_NAMES,
    DraftKind,
    DraftSpec,
    draft_kind,
    draft_spec_help,
    head_kind_entry,
    make_draft,
    parse_draft_spec,
    resolve_draft_spec,
)

__all__ = [
    "DEFAULT_DRAFT",
    "DEFAULT_K",
    "DRAFT_KINDS",
    "FALLBACK_DRAFT",
    "HEAD_KIND_NAMES",
    "CausalLMDraft",
    "Draft",
    "DraftKind",
    "DraftSpec",
    "Head",
    "UnrolledHead",
    "is_unrolled",
    "Proposal",
    "build_head",
    "build_layerskip_model",
    "check_same_tokenizer",
    "draft_kind",
    "draft_spec_help",
    "head_kind_entry",
    "load_head",
    "make_draft",
    "make_head_draft",
    "parse_draft_spec",
    "resolve_draft_spec",
    "target_vocab_size",
]
