"""EAGLE-3 heads: the function they compute (replayed by hand the way vLLM and SGLang run the exported checkpoint),
the fused features the engine hands them, greedy equality for chains and trees, save/load, online learning, and
the export's keys, shapes and config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import run_ar, run_spec, save_tiny_model_dir, tiny_llama
from safetensors.torch import load_file
from test_eagle import TREES, own_text
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.drafts.eagle import EagleDraft
from onlinespec.drafts.eagle3 import Eagle3Head, default_aux_layers
from onlinespec.drafts.head_store import save_head
from onlinespec.drafts.heads import build_head, head_feature_layers, load_head
from onlinespec.errors import UserError
from onlinespec.export import export_eagle3
from onlinespec.warmup.distill import agreement, batch_loss
from onlinespec.warmup.teacher import teacher_pass

LAYERS = 8  # aux layers (2, 4, 5): three different ones


@pytest.fixture(scope="module")
def target():
    return tiny_llama(seed=7, layers=LAYERS)


def features_of(target, ids: torch.Tensor) -> torch.Tensor:
    """The target's EAGLE-3 features of ids [1, T]: hidden states (2, 4, 5) and the last, normed: [1, T, 4d]."""
    with torch.no_grad():
        states = target(ids, output_hidden_states=True).hidden_states
    return torch.cat([states[i] for i in (2, 4, 5, -1)], dim=-1)


def distilled(target, vocab_ids=None, steps: int = 80) -> Eagle3Head:
    torch.manual_seed(0)
    head = build_head("eagle3", target, vocab_ids)
    head.unroll = 2
    batch = teacher_pass(target, own_text(target), 16, 0, head_feature_layers("eagle3", target))
    params = [dict(head.named_parameters())[n] for n in head.trainable_names()]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(steps):
        loss, _ = batch_loss(head, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return head.eval()


def rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def engine_eagle3_logits(tensors: dict, config: dict, embed: torch.nn.Module, features, next_ids) -> torch.Tensor:
    """What vLLM / SGLang compute from an exported EAGLE-3 checkpoint, written out by hand (causal attention over
    T positions, one sequence): features [T, 3d] (aux states), next_ids [T] -> logits [T, V] over the target ids."""
    d, eps = config["hidden_size"], config["rms_norm_eps"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = d // heads
    w = {k.removeprefix("midlayer."): v for k, v in tensors.items()}
    h = features @ tensors["fc.weight"].T
    x = torch.cat([rms(embed(next_ids), w["input_layernorm.weight"], eps), rms(h, w["hidden_norm.weight"], eps)], -1)
    length = x.shape[0]
    q = (x @ w["self_attn.q_proj.weight"].T).view(length, heads, head_dim).transpose(0, 1)[None]
    k = (x @ w["self_attn.k_proj.weight"].T).view(length, kv_heads, head_dim).transpose(0, 1)[None]
    v = (x @ w["self_attn.v_proj.weight"].T).view(length, kv_heads, head_dim).transpose(0, 1)
    positions = torch.arange(length)[None]
    from transformers import LlamaConfig

    cos, sin = LlamaRotaryEmbedding(LlamaConfig(**config))(x, positions)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k, v = k[0].repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
    scores = q[0] @ k.transpose(1, 2) / head_dim**0.5
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    attended = (scores.softmax(-1) @ v).transpose(0, 1).reshape(length, heads * head_dim)
    r = h + attended @ w["self_attn.o_proj.weight"].T
    m = rms(r, w["post_attention_layernorm.weight"], eps)
    g = r + (F.silu(m @ w["mlp.gate_proj.weight"].T) * (m @ w["mlp.up_proj.weight"].T)) @ w["mlp.down_proj.weight"].T
    draft_logits = rms(g, tensors["norm.weight"], eps) @ tensors["lm_head.weight"].T  # [T, Vd]
    full = torch.full((length, config["vocab_size"]), float("-inf"))
    full[:, torch.arange(draft_logits.shape[1]) + tensors["d2t"]] = draft_logits
    return full


def test_default_layers_are_the_engines_and_the_features_are_what_the_engine_passes(target) -> None:
    assert default_aux_layers(32) == (2, 16, 29) and default_aux_layers(LAYERS) == (2, 4, 5)
    head = build_head("eagle3", target).eval()
    draft = EagleDraft(head, "eagle3")
    assert draft.feature_layers == (2, 4, 5, -1) == head_feature_layers("eagle3", target)
    engine = SpeculativeEngine(target, draft)
    prompt = torch.tensor([5, 17, 3, 88, 41, 9])
    tokens, _ = run_spec(engine, prompt, GenerationConfig(max_new_tokens=12, k=3))
    committed = torch.cat([prompt, torch.tensor(tokens)])
    expected = features_of(target, committed[None, :-1])[0]  # the last token has no features yet
    torch.testing.assert_close(engine.features[: committed.numel() - 1], expected, rtol=1e-5, atol=1e-5)
    logits = target(committed[None, :-1]).logits[0]  # prompt feedback reads the target's logits off the last d
    torch.testing.assert_close(draft.target_logits(expected), logits, rtol=1e-5, atol=1e-5)


def test_a_warmed_head_is_accepted_and_greedy_output_equals_autoregressive(target) -> None:
    for vocab_ids in (None, torch.arange(0, 96, 2)):
        head = distilled(target, vocab_ids)
        for sequence in own_text(target)[:2]:
            prompt = torch.tensor(sequence[:6])
            expected, _ = run_ar(target, prompt, GenerationConfig(max_new_tokens=30))
            for tree in TREES:
                engine = SpeculativeEngine(target, EagleDraft(head, "eagle3"))
                tokens, stats = run_spec(engine, prompt, GenerationConfig(max_new_tokens=30, k=3, tree=tree))
                assert tokens == expected, (tree.kind, vocab_ids is None)
                assert stats.accepted > 0, tree.kind


def test_training_fits_the_target_at_every_depth_and_survives_save_and_load(tmp_path, target) -> None:
    held = teacher_pass(target, own_text(target), 16, 0, head_feature_layers("eagle3", target))
    untrained = build_head("eagle3", target)
    untrained.unroll = 2
    head = distilled(target, torch.arange(0, 96, 3))
    before, after = agreement(untrained, [held]), agreement(head, [held])
    assert len(after) == 2 and all(a > b + 0.1 for a, b in zip(after, before, strict=True))
    save_head(tmp_path / "head", head, target)
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["kind"] == "eagle3" and config["aux_layers"] == [2, 4, 5] and config["unroll"] == 2
    loaded = load_head(tmp_path / "head", target, "eagle3")
    assert agreement(loaded, [held]) == after and loaded.feature_layers == (2, 4, 5, -1)
    with pytest.raises(UserError, match="use --draft eagle3:"):
        load_head(tmp_path / "head", target, "eagle")


def test_online_learning_updates_every_trainable_tensor_and_the_next_round_drafts_better(target) -> None:
    from onlinespec.online.learners import LearnerConfig
    from onlinespec.online.session import OnlineConfig, OnlineLearning

    head = build_head("eagle3", target).eval()
    draft = EagleDraft(head, "eagle3")
    engine = SpeculativeEngine(target, draft)
    online = OnlineLearning(
        engine,
        OnlineConfig(learner="ogd", learner_cfg=LearnerConfig(lr=3e-3, step="adam"), round_requests=2, schedule="sync"),
    )
    before = {n: p.detach().clone() for n, p in head.named_parameters() if n in draft.trainable}
    assert {"lm_head.weight", "norm.weight", "layer.hidden_norm.weight", "fc.weight"} <= set(before)
    alphas = []
    for sequence in own_text(target, n=8) * 2:  # the same prompts again: the learned head must do better
        _, stats = run_spec(engine, torch.tensor(sequence[:6]), GenerationConfig(max_new_tokens=24, k=3))
        online.after_request(stats)
        alphas.append(stats.accepted / stats.drafted)
    changed = {n for n, p in head.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert changed == set(draft.trainable)
    first, second = sum(alphas[:8]) / 8, sum(alphas[8:]) / 8
    assert second > first + 0.05, (first, second)
    shared = {p.data_ptr() for p in target.parameters()}
    assert head.embed.weight.data_ptr() in shared and head.norm.weight.data_ptr() not in shared


def test_export_keys_shapes_config_and_the_engine_computes_the_same(tmp_path, target) -> None:
    torch.manual_seed(3)
    ids = torch.arange(1, 96, 2)
    head = build_head("eagle3", target, ids).eval()
    with torch.no_grad():  # a head whose every tensor differs from its initial value
        for name, p in head.named_parameters():
            if name in head.trainable_names():
                p.add_(torch.randn_like(p) * 0.05)
    save_head(tmp_path / "head", head, target)
    for fmt in ("vllm", "sglang"):
        out = export_eagle3(tmp_path / "head", tmp_path / fmt, target, fmt)
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
        tensors = load_file(str(out / "model.safetensors"))
        d, vd = target.config.hidden_size, ids.numel()
        layer = {k for k in tensors if k.startswith("midlayer.")}
        assert set(tensors) == layer | {"fc.weight", "norm.weight", "lm_head.weight", "d2t", "t2d"}
        assert len(layer) == 10 and tensors["midlayer.self_attn.q_proj.weight"].shape[1] == 2 * d
        assert tensors["fc.weight"].shape == (d, 3 * d) and tensors["lm_head.weight"].shape == (vd, d)
        assert torch.equal(torch.arange(vd) + tensors["d2t"], ids)
        assert torch.equal(tensors["t2d"].nonzero().flatten(), ids)
        named = dict(head.named_parameters())
        for key, value in tensors.items():
            if key.startswith("midlayer."):
                assert torch.equal(value, named[key.replace("midlayer.", "layer.")])
        config = json.loads((out / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLMEagle3"] and config["num_hidden_layers"] == 1
        assert config["draft_vocab_size"] == vd and config["vocab_size"] == 96
        assert config["tie_word_embeddings"] is False and config["onlinespec"]["aux_layers"] == [2, 4, 5]
        assert config["onlinespec"]["exact"] is True and config["onlinespec"]["format"] == fmt

        prompt = torch.randint(0, 96, (1, 9), generator=torch.Generator().manual_seed(1))
        features = features_of(target, prompt)[:, :-1]
        with torch.no_grad():
            ours = head.vocab.to_target(head(features, prompt[:, 1:])[0])[0]
            theirs = engine_eagle3_logits(
                tensors, config, target.get_input_embeddings(), features[0, :, : 3 * d], prompt[0, 1:]
            )
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_export_refuses_what_it_cannot_write_exactly(tmp_path, target) -> None:
    save_head(tmp_path / "moved", Eagle3Head(target, aux_layers=(1, 4, 6)), target)
    with pytest.raises(UserError, match="default"):
        export_eagle3(tmp_path / "moved", tmp_path / "out", target)
    save_head(tmp_path / "eagle", build_head("eagle", target), target)
    with pytest.raises(UserError, match="only EAGLE-3 heads"):
        export_eagle3(tmp_path / "eagle", tmp_path / "out", target)
    save_head(tmp_path / "head", build_head("eagle3", target), target)
    with pytest.raises(UserError, match="hidden size 32"):
        export_eagle3(tmp_path / "head", tmp_path / "out", tiny_llama(hidden=64, layers=LAYERS))
    with pytest.raises(ValueError, match="3 target layers"):
        Eagle3Head(target, aux_layers=(1, 2))


def test_cli_exports_an_eagle3_head(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat"])
    from onlinespec.models import load_model

    target = load_model(str(tmp_path / "m")).model
    save_head(tmp_path / "head", build_head("eagle3", target), target)
    proc = subprocess.run(
        [sys.executable, "-m", "onlinespec", "export", "--draft", f"eagle3:{tmp_path / 'head'}"]
        + ["--target", str(tmp_path / "m"), "--out", str(tmp_path / "o"), "--format", "sglang"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o" / "config.json").read_text())["architectures"] == ["LlamaForCausalLMEagle3"]


def test_the_hybrid_draft_takes_an_eagle3_head_and_decodes_exactly(tmp_path) -> None:
    from onlinespec.drafts import make_draft
    from onlinespec.models import load_model

    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"])
    loaded = load_model(str(tmp_path / "m"))
    draft = make_draft("hybrid:eagle3:fresh", loaded)
    assert draft.feature_layers == draft.head.feature_layers == (2, 2, 1, -1)
    prompt = torch.tensor([2, 3, 4, 5, 2, 3, 4])  # repeats itself: the lookup part drafts too
    expected, _ = run_ar(loaded.model, prompt, GenerationConfig(max_new_tokens=20))
    tokens, stats = run_spec(SpeculativeEngine(loaded.model, draft), prompt, GenerationConfig(max_new_tokens=20, k=3))
    assert tokens == expected and stats.drafted > 0
