"""One-query attention in float32 for reduced-precision models (models/decode_attention.py): only one-query calls
in a reduced dtype change, and they equal SDPA run on float32 copies; the choice is measured, cached and
overridable; models built from the switched config (the heads) follow it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import draft_of, noisy_copy, run_ar, run_spec, tiny_llama
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.kv_cache import new_cache
from onlinespec.errors import UserError
from onlinespec.models.decode_attention import (
    ENV,
    FLOAT32,
    SDPA,
    decode_attention,
    faster_decode_attention,
    one_query_in_float32,
    set_decode_attention,
    use_decode_attention,
)

GQA = SimpleNamespace(num_key_value_groups=2, is_causal=True, training=False)  # what the function reads of a layer


def qkv(queries: int, dtype: torch.dtype, length: int = 37) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(queries)
    q = torch.randn(1, 4, queries, 16, generator=g).to(dtype)
    k, v = (torch.randn(1, 2, length, 16, generator=g).to(dtype) for _ in range(2))
    return q, k, v


def test_one_bf16_query_is_sdpa_on_float32_copies_and_everything_else_is_sdpa_as_is() -> None:
    q, k, v = qkv(1, torch.bfloat16)
    out, weights = one_query_in_float32(GQA, q, k, v, None)
    expected, _ = sdpa_attention_forward(GQA, q.float(), k.float(), v.float(), None)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 1, 4, 16) and weights is None
    assert torch.equal(out, expected.to(torch.bfloat16))
    for queries, dtype in ((3, torch.bfloat16), (1, torch.float32), (3, torch.float32)):
        q, k, v = qkv(queries, dtype)
        assert torch.equal(one_query_in_float32(GQA, q, k, v, None)[0], sdpa_attention_forward(GQA, q, k, v, None)[0])
    # an additive mask in the model's dtype is cast with the inputs (SDPA wants it in the query's dtype)
    q, k, v = qkv(1, torch.bfloat16)
    mask = torch.zeros(1, 1, 1, 37, dtype=torch.bfloat16)
    mask[..., :5] = torch.finfo(torch.bfloat16).min
    masked = one_query_in_float32(GQA, q, k, v, mask)[0]
    assert torch.equal(masked, one_query_in_float32(GQA, q, k[:, :, 5:], v[:, :, 5:], None)[0])


def test_a_switched_bf16_model_changes_only_its_one_token_steps() -> None:
    """Prefill and multi-token forwards are bit-identical; one-token steps stay close to SDPA's."""
    model = tiny_llama(seed=0).to(torch.bfloat16)
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    logits = {}
    for mode in (SDPA, FLOAT32):
        set_decode_attention(model, mode)
        assert decode_attention(model) == mode
        cache = new_cache(model)
        with torch.inference_mode():
            many = model(input_ids=ids[:, :9], past_key_values=cache, use_cache=True).logits
            one = model(input_ids=ids[:, 9:10], past_key_values=cache, use_cache=True).logits
            three = model(input_ids=ids[:, 9:12], past_key_values=new_cache(model), use_cache=True).logits
        logits[mode] = (many, one, three)
    assert torch.equal(logits[SDPA][0], logits[FLOAT32][0]) and torch.equal(logits[SDPA][2], logits[FLOAT32][2])
    torch.testing.assert_close(logits[FLOAT32][1], logits[SDPA][1], atol=0.1, rtol=0.05)


def test_float32_models_are_untouched_greedy_equality_and_heads_follow_the_switch() -> None:
    """In float32 the switch changes nothing (greedy speculative = autoregressive, as with SDPA); a head draft built
    on a switched bf16 target runs through the registered attention and decodes."""
    from onlinespec.drafts.heads import make_head_draft

    target = tiny_llama(seed=1)
    engine = SpeculativeEngine(target, draft_of(noisy_copy(target, 0.3, seed=4), 96))
    cfg = GenerationConfig(max_new_tokens=32, k=3)
    prompt = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(1))
    outputs = {}
    for mode in (SDPA, FLOAT32):
        set_decode_attention(target, mode)
        outputs[mode] = (run_ar(target, prompt, cfg)[0], run_spec(engine, prompt, cfg)[0])
    assert outputs[SDPA] == outputs[FLOAT32] and outputs[SDPA][0] == outputs[SDPA][1]

    bf16 = tiny_llama(seed=2).to(torch.bfloat16)
    set_decode_attention(bf16, FLOAT32)
    draft = make_head_draft("eagle:fresh", bf16, "tiny")
    assert draft.model.layer.self_attn.config._attn_implementation == bf16.config._attn_implementation
    tokens, stats = run_spec(SpeculativeEngine(bf16, draft), prompt, cfg)
    assert len(tokens) == 32 and stats.target_forwards < 32 + 1


def test_auto_measures_once_for_reduced_precision_and_the_env_overrides(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert faster_decode_attention({SDPA: [100.0, 400.0], FLOAT32: [30.0, 120.0]}) == FLOAT32
    assert faster_decode_attention({SDPA: [100.0, 400.0], FLOAT32: [98.0, 390.0]}) == SDPA  # under MIN_GAIN
    fp32 = tiny_llama(seed=0)
    assert use_decode_attention(fp32, "auto", tmp_path) == SDPA  # nothing to choose: no measurement
    assert not (tmp_path / "decode-attention").exists()
    bf16 = tiny_llama(seed=0).to(torch.bfloat16)
    chosen = use_decode_attention(bf16, "auto", tmp_path)
    (saved,) = (tmp_path / "decode-attention").glob("*.json")
    record = json.loads(saved.read_text())
    assert chosen == record["choice"] == faster_decode_attention(record["us"]) == decode_attention(bf16)
    assert all(t > 0 for way in (SDPA, FLOAT32) for t in record["us"][way])
    saved.write_text(json.dumps({**record, "choice": SDPA if chosen == FLOAT32 else FLOAT32}))
    assert use_decode_attention(bf16, "auto", tmp_path) != chosen  # read from the cache, not measured again
    monkeypatch.setenv(ENV, SDPA)
    assert use_decode_attention(bf16, FLOAT32, tmp_path) == SDPA
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(UserError, match="unknown decode attention 'fast'.*auto, sdpa, float32"):
        use_decode_attention(bf16, "auto", tmp_path)


def test_another_attention_implementation_is_left_alone() -> None:
    model = tiny_llama(seed=0).to(torch.bfloat16)
    model.set_attn_implementation("eager")
    set_decode_attention(model, FLOAT32)
    assert decode_attention(model) == "eager"


def test_the_verify_cost_curve_is_measured_for_the_attention_it_runs_with(tmp_path) -> None:
    """The curve is relative to the one-token step, which the switch makes cheaper: each way has its own."""
    from onlinespec.decoding.verify_cost import cached_verify_cost

    model = tiny_llama(seed=0).to(torch.bfloat16)
    for mode in (SDPA, FLOAT32, SDPA):
        set_decode_attention(model, mode)
        cached_verify_cost(model, tmp_path)
    saved = [json.loads(p.read_text())["key"] for p in (tmp_path / "verify-cost").glob("*.json")]
    assert sorted(key.get("decode_attention", SDPA) for key in saved) == [FLOAT32, SDPA]
