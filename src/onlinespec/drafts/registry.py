"""The one registry of draft kinds: it parses a `--draft` spec, builds the draft it names, and writes the flag's
help. Adding a draft kind is one new file (the draft, and for a head kind its head module) plus one entry below.

A spec is `NAME` or `NAME:ARGUMENT` for a named kind; anything else is a model spec (an independent draft LM).
Builders are named as "module:function" and imported when first used, so the registry imports no draft module
(every draft module may import this one) and listing the kinds loads no model code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

from onlinespec.decoding.config import DEFAULT_K
from onlinespec.drafts.bundled import has_bundled_head
from onlinespec.errors import UserError

if TYPE_CHECKING:
    from onlinespec.decoding.draft import Draft
    from onlinespec.models.resolve import LoadedModel

# `auto`: the hybrid draft (prompt lookup where the request repeats itself, the warmed-up EAGLE head bundled for
# the target elsewhere) when a head is bundled (the embedded default), else the lookup draft alone (no model).
# Measured (docs/benchmarks.md, benchmarks/bench_vs_hf.py, fp32, 12 prompts of 3 streams): hybrid k = 2 runs
# 1.30x our autoregressive path, the EAGLE head alone 0.93x, lookup k = 4 1.21x; layerskip:4 (the fallback
# before) 0.78x at its best (benchmarks/bench_drafts.py).
DEFAULT_DRAFT = "auto"
# The lookup and hybrid drafts' default k: the verify-cost rule trims each proposal to what pays on this machine,
# and the hybrid caps the head's chain at HEAD_K (2) whatever k is, so k only lets lookup matches run longer.
# Measured against k = 2 (docs/benchmarks.md): math adaptation stream tau 2.065 vs 1.707 (frozen) and 2.479 vs
# 1.866 (count); bench_vs_hf.py 1.07x (fp32) and 1.22-1.25x (bf16) on an AMX Xeon, about even on the AMD EPYC.
LOOKUP_K = 7
FALLBACK_DRAFT = "lookup"
MODEL = ""  # the name of the entry that takes every spec no named kind claims
HEAD_BUILDER = "onlinespec.drafts.heads:build_head_draft"

# (spec, target, dtype) -> the draft, or None for no draft
Builder = Callable[["DraftSpec", "LoadedModel", str], "Draft | None"]


def load(ref: str) -> object:
    """'package.module:attribute' -> that attribute (the module imported on first use)."""
    module, _, attribute = ref.partition(":")
    return getattr(import_module(module), attribute)


@dataclass(frozen=True)
class DraftKind:
    """One kind of draft: how its spec is written, one help line, and how it is built.

    `argument` is a regular expression the text after "NAME:" must match in full; "" = the kind takes no
    argument (`NAME:...` is then a model spec). A bare `NAME` is this kind only when the expression accepts "".
    A head kind also names its head module class (a drafts/head_protocol.py Head) and its draft class.
    """

    name: str  # what a spec starts with; MODEL for the independent LM entry
    syntax: str  # how a user writes it, in the help
    help: str  # one line, in the help
    builder: str | Builder | None  # "module:function" or a function; None = no draft (autoregressive decoding)
    argument: str = ""
    fix: str = ""  # what to write instead, when the argument does not match
    head: str | None = None  # head kinds: "module:HeadClass"
    draft: str | None = None  # head kinds: "module:DraftClass"
    # How its drafts learn online: GRADIENT (ogd, optimistic, ensemble, ...) and/or COUNTING (the `count` learner)
    learns: tuple[str, ...] = ("gradient",)
    k: int = DEFAULT_K  # its drafts' chain length when neither --k nor the request gives one

    def build(self, spec: DraftSpec, target: LoadedModel, dtype: str) -> Draft | None:
        if self.builder is None:
            return None
        builder = load(self.builder) if isinstance(self.builder, str) else self.builder
        return builder(spec, target, dtype)

    @property
    def head_class(self) -> type:
        """The head module class of a head kind: built as cls(target, vocab_ids=None, **layout)."""
        if self.head is None:
            raise UserError(f"'{self.name}' is not a head kind: choose one of {', '.join(HEAD_KIND_NAMES)}")
        return load(self.head)

    @property
    def draft_class(self) -> type:
        """The draft class of a head kind: built as cls(head, name=spec)."""
        if self.draft is None:
            raise UserError(f"'{self.name}' is not a head kind: choose one of {', '.join(HEAD_KIND_NAMES)}")
        return load(self.draft)


def head_kind(name: str, help: str, head: str, draft: str) -> DraftKind:
    """The entry of a feature-level head kind (head, draft: "module:Class"): `NAME` (the head bundled for the
    target), `NAME:DIR` (one saved by `onlinespec warmup`) or `NAME:fresh` (untrained)."""
    return DraftKind(name, f"{name}[:DIR|:fresh]", help, HEAD_BUILDER, ".*", head=head, draft=draft)


def _auto(spec: DraftSpec, target: LoadedModel, dtype: str) -> Draft | None:
    return make_draft(resolve_draft_spec(DEFAULT_DRAFT, target.spec), target, dtype)


DRAFT_KINDS: tuple[DraftKind, ...] = (
    DraftKind(
        "auto",
        "auto",
        "hybrid (prompt lookup + the EAGLE head bundled for the target) if a head is bundled, else lookup",
        _auto,
        learns=("gradient", "counting"),  # the hybrid; for a target with no bundled head the lookup (counting only)
        k=LOOKUP_K,
    ),
    DraftKind("none", "none", "no draft: plain autoregressive decoding", None, learns=()),
    DraftKind(
        "layerskip",
        "layerskip:N",
        "the target's first N decoder layers (a self-draft sharing its embeddings and LM head)",
        "onlinespec.drafts.layerskip:make_layerskip_draft",
        r"\d+",
        "write layerskip:N with N a positive whole number of layers",
    ),
    DraftKind(
        "lookup",
        "lookup[:N[:E]]",
        "no model: propose what followed the longest match of the last N (default 4) tokens in the request or in "
        "earlier traffic, which it learns by counting (--learner count; at most E n-gram entries, default 200000)",
        "onlinespec.drafts.lookup:make_lookup_draft",
        r"([1-9]\d*(:[1-9]\d*)?)?",
        "write lookup, lookup:N or lookup:N:E with N >= 1 the longest n-gram matched and E >= 1 the most index "
        "entries kept",
        learns=("counting",),
        k=LOOKUP_K,
    ),
    DraftKind(
        "hybrid",
        "hybrid[:HEAD]",
        "the lookup draft's proposal where the last 2+ tokens match earlier text of the request, a head draft's "
        "elsewhere (HEAD: eagle, eagle3, medusa or hydra[:DIR|:fresh]; default the bundled eagle head)",
        "onlinespec.drafts.hybrid:make_hybrid_draft",
        r"([a-z][a-z0-9]*(:.+)?)?",
        "write hybrid or hybrid:HEAD with HEAD a head draft spec, e.g. hybrid:eagle:DIR",
        learns=("gradient", "counting"),
        k=LOOKUP_K,
    ),
    head_kind(
        "eagle",
        "an EAGLE head (one decoder layer over the target's features)",
        "onlinespec.drafts.eagle:EagleHead",
        "onlinespec.drafts.eagle:EagleDraft",
    ),
    head_kind(
        "eagle3",
        "an EAGLE-3 head (one decoder layer over a fusion of low, middle and high target layers, its own LM head)",
        "onlinespec.drafts.eagle3:Eagle3Head",
        "onlinespec.drafts.eagle:EagleDraft",
    ),
    head_kind(
        "medusa",
        "Medusa heads (one per draft depth)",
        "onlinespec.drafts.medusa:MedusaHead",
        "onlinespec.drafts.depth_heads:DepthHeadsDraft",
    ),
    head_kind(
        "hydra",
        "Hydra heads (Medusa heads that also read the drafted path)",
        "onlinespec.drafts.hydra:HydraHead",
        "onlinespec.drafts.depth_heads:DepthHeadsDraft",
    ),
    DraftKind(
        MODEL,
        "MODEL",
        "an independent draft LM sharing the target's tokenizer (embedded name, directory, .gguf file or hub id)",
        "onlinespec.drafts.independent:make_independent_draft",
    ),
)
HEAD_KIND_NAMES: tuple[str, ...] = tuple(k.name for k in DRAFT_KINDS if k.head is not None)


@dataclass(frozen=True)
class DraftSpec:
    """A parsed spec: its kind, the text after "NAME:" ("" when absent; the whole spec for MODEL), the spec."""

    kind: DraftKind
    argument: str
    text: str


def parse_draft_spec(spec: str) -> DraftSpec:
    """`spec` -> its kind and argument; a UserError saying what to write when a named kind's argument is bad."""
    name, colon, argument = spec.partition(":")
    for kind in DRAFT_KINDS:
        if kind.name == MODEL or kind.name != name:
            continue
        if not colon and (not kind.argument or re.fullmatch(kind.argument, "")):
            return DraftSpec(kind, "", spec)
        if colon and kind.argument:
            if not re.fullmatch(kind.argument, argument):
                raise UserError(f"bad draft spec '{spec}': {kind.fix}")
            return DraftSpec(kind, argument, spec)
        break  # `none:x`, a bare `layerskip`: not this kind's syntax, so a model spec (as it always was)
    return DraftSpec(draft_kind(MODEL), spec, spec)


def draft_kind(name: str) -> DraftKind:
    """The entry named `name` (MODEL for the independent LM)."""
    for kind in DRAFT_KINDS:
        if kind.name == name:
            return kind
    raise UserError(f"unknown draft kind '{name}': choose one of {', '.join(k.name for k in DRAFT_KINDS if k.name)}")


def head_kind_entry(name: str) -> DraftKind:
    """The entry of head kind `name` (its `head_class`, `draft_class`); a UserError for any other name."""
    if name not in HEAD_KIND_NAMES:
        raise UserError(f"unknown head kind '{name}': choose one of {', '.join(HEAD_KIND_NAMES)}")
    return draft_kind(name)


def resolve_draft_spec(spec: str, target_spec: str) -> str:
    """The concrete spec `auto` stands for with this target (`hybrid`, lookup + the bundled EAGLE head, when a
    head is bundled for it, else FALLBACK_DRAFT); any other spec unchanged."""
    if spec != DEFAULT_DRAFT:
        return spec
    return "hybrid" if has_bundled_head("eagle", target_spec) else FALLBACK_DRAFT


def make_draft(spec: str, target: LoadedModel, dtype: str | None = None) -> Draft | None:
    """Build the draft named by `spec` for `target`, in `dtype` (default, or "auto": the target's); None for `none`
    (autoregressive). The draft carries its kind's `default_k` (what the engine drafts when a request gives no k)."""
    dtype = target.dtype if dtype in (None, "auto") else dtype
    parsed = parse_draft_spec(spec)
    draft = parsed.kind.build(parsed, target, dtype)
    if draft is not None:
        draft.default_k = parsed.kind.k
    return draft


def default_k(spec: str) -> int:
    """The chain length drafts of `spec` use when no k is given: LOOKUP_K for lookup, hybrid and auto, else
    DEFAULT_K."""
    return parse_draft_spec(spec).kind.k


def draft_spec_help() -> str:
    """The `--draft` flag's help text (argparse fills in %(default)s): every kind's syntax and help line."""
    forms = "; ".join(f"{kind.syntax} = {kind.help}" for kind in DRAFT_KINDS)
    return f"draft: {forms}. DIR = a head saved by `onlinespec warmup`, fresh = untrained (default: %(default)s)"
