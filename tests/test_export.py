"""`onlinespec export`: an EAGLE head in the layout vLLM / SGLang load (keys, shapes, config), and the function it
computes there, replayed with transformers modules the way those engines run an EAGLE-1 head."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import save_tiny_model_dir, tiny_llama
from safetensors.torch import load_file
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from onlinespec.drafts.head_store import save_head
from onlinespec.drafts.heads import build_head
from onlinespec.errors import UserError
from onlinespec.export import export_eagle

LAYER_KEYS = {
    f"layers.0.{n}"
    for n in (
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
        "post_attention_layernorm.weight",
    )
}


@pytest.fixture(scope="module")
def target():
    return tiny_llama(seed=0)


def saved_head(path, target, layout="eagle1", vocab_ids=None, seed=3):
    torch.manual_seed(seed)
    head = build_head("eagle", target, vocab_ids, layout=layout).eval()
    save_head(path, head, target)
    return head


@pytest.mark.parametrize("fmt", ["vllm", "sglang"])
def test_layout_keys_shapes_config_and_round_trip(tmp_path, target, fmt) -> None:
    head = saved_head(tmp_path / "head", target)
    out = export_eagle(tmp_path / "head", tmp_path / "out", target, fmt)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    tensors = load_file(str(out / "model.safetensors"))
    expected = LAYER_KEYS | {"fc.weight"} | ({"fc.bias"} if fmt == "sglang" else set())
    assert set(tensors) == expected  # no input_layernorm, no embed_tokens / lm_head (taken from the target)
    d = target.config.hidden_size
    assert tensors["fc.weight"].shape == (d, 2 * d)
    named = dict(head.named_parameters())
    for key in LAYER_KEYS:
        assert tensors[key].dtype == torch.float32
        assert torch.equal(tensors[key], named[key.replace("layers.0.", "layer.")])
    fc = named["fc.weight"]
    assert torch.equal(tensors["fc.weight"][:, :d], fc[:, d:])  # embedding half first, as the engines concatenate
    assert torch.equal(tensors["fc.weight"][:, d:], fc[:, :d])
    if fmt == "sglang":
        assert torch.equal(tensors["fc.bias"], torch.zeros(d))

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [{"vllm": "LlamaForCausalLM", "sglang": "LlamaForCausalLMEagle"}[fmt]]
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 1
    for field in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        assert config[field] == getattr(target.config, field)
    assert config["rms_norm_eps"] == target.config.rms_norm_eps
    assert config["rope_theta"] == target.config.rope_parameters["rope_theta"] and config["rope_scaling"] is None
    assert config["torch_dtype"] == "float32"
    assert config["tie_word_embeddings"] is (fmt == "vllm")  # SGLang: a separate LM head, set from the target's
    assert config["onlinespec"]["exact"] is True and config["onlinespec"]["format"] == fmt
    LlamaConfig(**config)  # a valid Llama config for the engines' transformers


def engine_eagle1_logits(out_dir, target, features, next_ids) -> torch.Tensor:
    """What vLLM / SGLang compute from the exported checkpoint: fc(cat(embed, feature)) -> layer 0 without its
    input norm -> the target's LM head, no final norm."""
    config = LlamaConfig(**json.loads((out_dir / "config.json").read_text()))
    tensors = load_file(str(out_dir / "model.safetensors"))
    layer = LlamaDecoderLayer(config, layer_idx=0)
    layer.input_layernorm = torch.nn.Identity()
    layer.load_state_dict({k.removeprefix("layers.0."): v for k, v in tensors.items() if k.startswith("layers.0.")})
    x = torch.nn.functional.linear(
        torch.cat([target.get_input_embeddings()(next_ids), features], dim=-1),
        tensors["fc.weight"],
        tensors.get("fc.bias"),
    )
    length = x.shape[1]
    positions = torch.arange(length)[None]
    mask = torch.zeros(length, length).masked_fill(torch.ones(length, length).triu(1).bool(), float("-inf"))
    hidden = layer(
        x,
        attention_mask=mask[None, None],
        position_ids=positions,
        position_embeddings=LlamaRotaryEmbedding(config)(x, positions),
    )
    return target.get_output_embeddings()(hidden)


@pytest.mark.parametrize("fmt", ["vllm", "sglang"])
def test_eagle1_head_computes_the_same_in_the_engine_layout(tmp_path, target, fmt) -> None:
    head = saved_head(tmp_path / "head", target)
    out = export_eagle(tmp_path / "head", tmp_path / "out", target, fmt)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 96, (1, 9), generator=gen)
    with torch.no_grad():
        features = target(ids, output_hidden_states=True).hidden_states[-1]  # after the final norm
        ours = head(features[:, :-1], ids[:, 1:])[0]
        theirs = engine_eagle1_logits(out, target, features[:, :-1], ids[:, 1:])
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_default_layout_needs_inexact_and_differs(tmp_path, target) -> None:
    head = saved_head(tmp_path / "head", target, layout="onlinespec")
    with pytest.raises(UserError, match="--eagle-layout eagle1"):
        export_eagle(tmp_path / "head", tmp_path / "out", target)
    out = export_eagle(tmp_path / "head", tmp_path / "out", target, inexact=True)
    assert set(load_file(str(out / "model.safetensors"))) == LAYER_KEYS | {"fc.weight"}
    assert json.loads((out / "config.json").read_text())["onlinespec"]["exact"] is False
    ids = torch.randint(0, 96, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = target(ids, output_hidden_states=True).hidden_states[-1]
        ours = head(features[:, :-1], ids[:, 1:])[0]
        theirs = engine_eagle1_logits(out, target, features[:, :-1], ids[:, 1:])
    assert not torch.allclose(theirs, ours, atol=1e-3)  # the two dropped norms change the function


def test_reduced_vocabulary(tmp_path, target) -> None:
    ids = torch.arange(0, 96, 3)
    saved_head(tmp_path / "head", target, vocab_ids=ids)
    with pytest.raises(UserError, match="--format sglang"):
        export_eagle(tmp_path / "head", tmp_path / "v", target, "vllm")
    out = export_eagle(tmp_path / "head", tmp_path / "s", target, "sglang")
    assert torch.load(out / "hot_token_map.pt", weights_only=True) == ids.tolist()
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 96 and config["onlinespec"]["token_map"] == "hot_token_map.pt"
    assert "draft_vocab_ids" not in load_file(str(out / "model.safetensors"))
    out = export_eagle(tmp_path / "head", tmp_path / "v", target, "vllm", drop_draft_vocab=True)
    assert json.loads((out / "config.json").read_text())["onlinespec"]["exact"] is False


def test_mismatched_target_and_bad_input(tmp_path, target) -> None:
    saved_head(tmp_path / "head", target)
    with pytest.raises(UserError, match="hidden size 32"):
        export_eagle(tmp_path / "head", tmp_path / "out", tiny_llama(hidden=64))
    with pytest.raises(UserError, match="does not exist"):
        export_eagle(tmp_path / "nope", tmp_path / "out", target)
    with pytest.raises(UserError, match="not a draft head directory"):
        export_eagle(tmp_path, tmp_path / "out", target)
    with pytest.raises(UserError, match="not an earlier export"):
        export_eagle(tmp_path / "head", tmp_path / "head", target)
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    (tmp_path / "medusa").mkdir()
    (tmp_path / "medusa" / "model.safetensors").write_bytes((tmp_path / "head" / "model.safetensors").read_bytes())
    (tmp_path / "medusa" / "config.json").write_text(json.dumps({**config, "kind": "medusa"}))
    with pytest.raises(UserError, match="only EAGLE heads"):
        export_eagle(tmp_path / "medusa", tmp_path / "out", target)
    export_eagle(tmp_path / "head", tmp_path / "out", target)
    export_eagle(tmp_path / "head", tmp_path / "out", target, "sglang")  # replaces an earlier export
    assert json.loads((tmp_path / "out" / "config.json").read_text())["onlinespec"]["format"] == "sglang"


def onlinespec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onlinespec", *args], capture_output=True, text=True, timeout=300)


def test_cli(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat"])
    target = tiny_llama(seed=0, vocab=7)
    saved_head(tmp_path / "head", target)
    proc = onlinespec(
        "export", "--draft", f"eagle:{tmp_path / 'head'}", "--target", str(tmp_path / "m"), "--out", str(tmp_path / "o")
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    for args, message in [
        (["--draft", "layerskip:2"], "--draft must be eagle:DIR"),
        (["--draft", f"eagle:{tmp_path / 'none'}"], "does not exist"),
        (["--draft", f"eagle:{tmp_path / 'head'}", "--target", "./no/such/dir"], "model directory"),
    ]:
        base = {"--target": str(tmp_path / "m"), "--out": str(tmp_path / "o2")}
        flags = [*args] + [x for k, v in base.items() if k not in args for x in (k, v)]
        proc = onlinespec("export", *flags)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
