"""An independent draft LM (OSD-style): any model spec, which must share the target's tokenizer."""

from __future__ import annotations

from onlinespec.drafts.causal_lm import CausalLMDraft, target_vocab_size
from onlinespec.drafts.registry import DraftSpec
from onlinespec.errors import UserError
from onlinespec.models.resolve import LoadedModel, load_model


def make_independent_draft(spec: DraftSpec, target: LoadedModel, dtype: str) -> CausalLMDraft:
    """A model spec: the model it names, loaded in `dtype`, which must share the target's tokenizer."""
    loaded = load_model(spec.text, dtype)
    check_same_tokenizer(target.tokenizer, loaded.tokenizer, spec.text)
    return CausalLMDraft(loaded.model, target_vocab_size(target), name=spec.text)


def check_same_tokenizer(target_tokenizer, draft_tokenizer, draft_spec: str) -> None:
    """Refuse a draft whose token ids mean something else than the target's: its proposals would be garbage."""
    target_vocab, draft_vocab = target_tokenizer.get_vocab(), draft_tokenizer.get_vocab()
    if target_vocab == draft_vocab:
        return
    differing = [tok for tok, idx in draft_vocab.items() if target_vocab.get(tok) != idx]
    example = differing[0] if differing else next(iter(set(target_vocab) - set(draft_vocab)), "?")
    raise UserError(
        f"draft '{draft_spec}' does not share the target's tokenizer: {len(differing)} of {len(draft_vocab)} "
        f"draft tokens have another id in the target (e.g. {example!r}: draft {draft_vocab.get(example)} vs "
        f"target {target_vocab.get(example)}), target vocabulary {len(target_vocab)}. Use a draft from the same "
        "model family, or a self-draft such as layerskip:4"
    )
