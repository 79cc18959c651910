"""Draft kinds behind one protocol (`Draft`), and `make_draft` which builds one from a spec string.

Specs: `auto` (the default: the EAGLE head bundled for the target if there is one, else layerskip:4),
`layerskip:N` (the target's first N layers), `eagle|medusa|hydra[:DIR|:fresh]` (a feature-level head: the bundled
one, one warmed up by `onlinespec warmup`, or untrained), `none` (plain autoregressive decoding), or any model
spec (`smollm2-135m`, a directory, a .gguf file, a hub id) for an independent draft LM with the target's
tokenizer.
"""

from __future__ import annotations

from onlinespec.decoding.config import DEFAULT_K
from onlinespec.drafts.base import Draft, Proposal
from onlinespec.drafts.causal_lm import CausalLMDraft
from onlinespec.drafts.heads import HEAD_KINDS, has_bundled_head, make_head_draft
from onlinespec.drafts.independent import check_same_tokenizer
from onlinespec.drafts.layerskip import build_layerskip_model
from onlinespec.errors import UserError
from onlinespec.models.resolve import LoadedModel, load_model

# `auto`: the warmed-up EAGLE head bundled for the target when there is one (the embedded default), else
# layerskip:4. Measured (README, benchmarks/bench_drafts.py): the bundled head at k = 2 runs 1.08x autoregressive,
# layerskip:4 at its best (k = 1) 0.78x.
DEFAULT_DRAFT = "auto"
FALLBACK_DRAFT = "layerskip:4"


def target_vocab_size(target: LoadedModel) -> int:
    return target.model.get_output_embeddings().weight.shape[0]


def resolve_draft_spec(spec: str, target_spec: str) -> str:
    """The concrete spec `auto` stands for with this target (`eagle` when a head is bundled for it, else
    FALLBACK_DRAFT); any other spec unchanged."""
    if spec != "auto":
        return spec
    return "eagle" if has_bundled_head("eagle", target_spec) else FALLBACK_DRAFT


def draft_spec_help() -> str:
    """The `--draft` flag's help text: every spec form a user can write."""
    return (
        "draft: auto, eagle[:DIR], medusa[:DIR], hydra[:DIR], layerskip:N, a model spec sharing the target's "
        "tokenizer, or none (default: %(default)s = the bundled EAGLE head for the embedded model, else layerskip:4)"
    )


def make_draft(spec: str, target: LoadedModel, dtype: str = "float32") -> Draft | None:
    """Build the draft named by `spec` for `target`; None for `none` (autoregressive)."""
    if spec == "none":
        return None
    spec = resolve_draft_spec(spec, target.spec)
    if spec.partition(":")[0] in HEAD_KINDS:
        return make_head_draft(spec, target.model, target.spec)
    if spec.startswith("layerskip:"):
        value = spec.split(":", 1)[1]
        if not value.isdigit():
            raise UserError(f"bad draft spec '{spec}': write layerskip:N with N a positive whole number of layers")
        model = build_layerskip_model(target.model, int(value))
        shared = {id(p) for p in target.model.parameters()}
        own_layers = [n for n, p in model.named_parameters() if id(p) not in shared]
        return CausalLMDraft(model, target_vocab_size(target), name=spec, trainable=own_layers)
    loaded = load_model(spec, dtype)
    check_same_tokenizer(target.tokenizer, loaded.tokenizer, spec)
    return CausalLMDraft(loaded.model, target_vocab_size(target), name=spec)


__all__ = [
    "DEFAULT_DRAFT",
    "DEFAULT_K",
    "CausalLMDraft",
    "Draft",
    "Proposal",
    "build_layerskip_model",
    "check_same_tokenizer",
    "draft_spec_help",
    "make_draft",
    "resolve_draft_spec",
]
