"""The draft registry: spec parsing and its errors, the generated --draft help, every entry building a draft on
tiny random models, the declared protocols those drafts and heads satisfy, and the engine's seam."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from conftest import save_tiny_model_dir, tiny_llama

from onlinespec.drafts import registry
from onlinespec.drafts.causal_lm import CausalLMDraft, target_vocab_size
from onlinespec.drafts.head_protocol import Head, UnrolledHead
from onlinespec.drafts.heads import build_head
from onlinespec.drafts.registry import (
    DRAFT_KINDS,
    HEAD_KIND_NAMES,
    MODEL,
    DraftKind,
    draft_kind,
    draft_spec_help,
    head_kind_entry,
    make_draft,
    parse_draft_spec,
)
from onlinespec.errors import UserError
from onlinespec.models import LoadedModel, load_model
from onlinespec.online.counting_draft import CountingDraft
from onlinespec.online.trainable_draft import TrainableDraft

SRC = Path(__file__).resolve().parent.parent / "src" / "onlinespec"


@pytest.mark.parametrize(
    ("spec", "kind", "argument"),
    [
        ("auto", "auto", ""),
        ("none", "none", ""),
        ("layerskip:3", "layerskip", "3"),
        ("eagle", "eagle", ""),
        ("medusa:fresh", "medusa", "fresh"),
        ("hydra:some/dir:x", "hydra", "some/dir:x"),
        ("smollm2-135m", MODEL, "smollm2-135m"),
        ("none:x", MODEL, "none:x"),  # a kind that takes no argument: the spec is a model spec, as it always was
        ("layerskip", MODEL, "layerskip"),  # layerskip needs its N: the bare word is a model spec
        ("lookup", "lookup", ""),
        ("lookup:3:1000", "lookup", "3:1000"),
    ],
)
def test_specs_parse_into_kind_and_argument(spec: str, kind: str, argument: str) -> None:
    parsed = parse_draft_spec(spec)
    assert (parsed.kind.name, parsed.argument, parsed.text) == (kind, argument, spec)


@pytest.mark.parametrize("spec", ["layerskip:x", "layerskip:", "layerskip:-1"])
def test_a_bad_argument_says_what_to_write(spec: str) -> None:
    expected = f"bad draft spec '{spec}': write layerskip:N with N a positive whole number of layers"
    with pytest.raises(UserError, match=f"^{re.escape(expected)}$"):
        parse_draft_spec(spec)


def test_unknown_kind_names_are_refused() -> None:
    with pytest.raises(UserError, match="unknown draft kind 'bogus': choose one of auto, none, layerskip"):
        draft_kind("bogus")
    with pytest.raises(UserError, match="unknown head kind 'layerskip': choose one of eagle, eagle3, medusa, hydra"):
        head_kind_entry("layerskip")


def test_help_names_every_kind_and_keeps_the_default() -> None:
    text = draft_spec_help()
    assert all(kind.syntax in text and kind.help in text for kind in DRAFT_KINDS)
    parser = argparse.ArgumentParser()
    parser.add_argument("--draft", default="auto", help=text)
    assert "(default: auto)" in " ".join(parser.format_help().split())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(a loadable tiny target, the directory of an independent draft with the same tokenizer)."""
    root = tmp_path_factory.mktemp("registry")
    words = ["a", "b", "c", "d"]
    save_tiny_model_dir(root / "target", words, seed=0)
    save_tiny_model_dir(root / "draft", words, seed=1)
    return load_model(str(root / "target")), str(root / "draft")


def test_every_entry_builds_a_draft_that_learning_and_the_engine_can_use(models) -> None:
    target, draft_dir = models
    # auto falls back to the lookup draft without a bundled head
    deep = LoadedModel(spec="tiny", model=tiny_llama(layers=6, vocab=6), tokenizer=target.tokenizer)
    specs = {"auto": "auto", "none": "none", "layerskip": "layerskip:1", "lookup": "lookup:3", MODEL: draft_dir}
    specs |= {name: f"{name}:fresh" for name in HEAD_KIND_NAMES} | {"hybrid": "hybrid:medusa:fresh"}
    assert set(specs) == {kind.name for kind in DRAFT_KINDS}
    for name, spec in specs.items():
        draft = make_draft(spec, deep if name == "auto" else target)
        if name == "none":
            assert draft is None
            continue
        if name in ("lookup", "auto"):  # learns by counting, without gradients
            assert isinstance(draft, CountingDraft) and not isinstance(draft, TrainableDraft)
            assert draft.name == ("lookup" if name == "auto" else spec) and not draft.wants_target_hidden
            assert draft.describe()["max_ngram"] == (4 if name == "auto" else 3)
            continue
        assert isinstance(draft, TrainableDraft), name
        assert draft.name == spec
        assert set(draft.trainable) <= {n for n, _ in draft.model.named_parameters()}
        assert draft.wants_target_hidden == (name in (*HEAD_KIND_NAMES, "hybrid"))
        if name == "hybrid":  # lookup + a head: learning trains the head
            assert (
                isinstance(draft.head.model, head_kind_entry("medusa").head_class) and draft.model is draft.head.model
            )
        if name in HEAD_KIND_NAMES:
            assert isinstance(draft, head_kind_entry(name).draft_class)
            assert isinstance(draft.model, head_kind_entry(name).head_class)


@pytest.mark.parametrize("name", HEAD_KIND_NAMES)
def test_every_head_kind_builds_a_head(tiny_target, name: str) -> None:
    head = build_head(name, tiny_target)
    assert isinstance(head, Head) and head.kind == name
    assert isinstance(head, UnrolledHead) == (name in ("eagle", "eagle3"))
    assert len(head.offsets) == len(head.loss_weights) >= 1
    assert set(head.store_config()) == set(head.layout_keys)


def test_a_new_kind_is_one_entry(monkeypatch, models) -> None:
    """The registry is the only list of kinds: one more entry parses, builds and shows in the help."""
    target, _ = models

    def make_copy_draft(spec, target, dtype):
        return CausalLMDraft(target.model, target_vocab_size(target), name=spec.text, trainable=[])

    entry = DraftKind("copy", "copy", "the target itself as its own draft", make_copy_draft)
    monkeypatch.setattr(registry, "DRAFT_KINDS", (*DRAFT_KINDS, entry))
    assert parse_draft_spec("copy").kind is entry
    assert "copy = the target itself as its own draft" in draft_spec_help()
    assert make_draft("copy", target).model is target.model


def test_the_engine_owns_its_seam() -> None:
    """decoding/ imports nothing from drafts/ (the Draft protocol lives in decoding/draft.py)."""
    for path in sorted((SRC / "decoding").glob("*.py")):
        assert not re.search(r"^\s*(from|import) onlinespec\.drafts", path.read_text(), re.M), path.name


def test_each_kind_has_a_default_chain_length_the_engine_uses_when_a_request_gives_none() -> None:
    """Lookup, hybrid and auto draft LOOKUP_K tokens unless told (the cost rule trims what does not pay), every
    other kind DEFAULT_K; make_draft hands the kind's k to the draft, and the engine reads it for k = None."""
    from onlinespec.decoding.config import DEFAULT_K, GenerationConfig
    from onlinespec.decoding.engine import SpeculativeEngine

    assert registry.LOOKUP_K == 7 and DEFAULT_K == 2
    for spec in ("auto", "lookup", "lookup:3", "hybrid", "hybrid:eagle:fresh"):
        assert registry.default_k(spec) == registry.LOOKUP_K, spec
    for spec in ("eagle", "eagle:fresh", "medusa:fresh", "layerskip:2", "none", "some/model"):
        assert registry.default_k(spec) == DEFAULT_K, spec
    target = tiny_llama(seed=0)
    loaded = LoadedModel(spec="tiny", model=target, tokenizer=None)
    lookup = make_draft("lookup", loaded)
    assert lookup.default_k == registry.LOOKUP_K and make_draft("layerskip:1", loaded).default_k == DEFAULT_K
    engine = SpeculativeEngine(target, lookup)
    assert engine.chain_length(GenerationConfig()) == 7 and engine.chain_length(GenerationConfig(k=3)) == 3
    engine.draft = registry.load("onlinespec.drafts.lookup:LookupDraft")(96)  # built directly: no default_k
    assert engine.chain_length(GenerationConfig()) == DEFAULT_K
