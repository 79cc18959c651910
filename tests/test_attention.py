"""Grouped-query attention folded into the query length (models/attention.py): bf16 outputs equal SDPA's, float32
and unsupported calls are SDPA's own, the choice is measured, cached and overridable, and models built from the
switched config (the heads) follow it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import draft_of, noisy_copy, run_ar, run_spec, tiny_llama
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.kv_cache import new_cache
from onlinespec.decoding.tree import TreeConfig
from onlinespec.errors import UserError
from onlinespec.models.attention import (
    ATTENTION_NAME,
    ENV,
    FOLDED,
    SDPA,
    attention_kind,
    causal_mask,
    faster_attention,
    folded_gqa_attention,
    folded_mask,
    set_attention,
    use_attention,
)

GQA = SimpleNamespace(num_key_value_groups=3, is_causal=True, training=False)  # what the functions read of a layer


def qkv(queries: int, dtype: torch.dtype, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(queries * 1000 + length)
    q = torch.randn(1, 6, queries, 16, generator=g).to(dtype)
    k, v = (torch.randn(1, 2, length, 16, generator=g).to(dtype) for _ in range(2))
    return q, k, v


def test_folding_computes_what_sdpa_computes() -> None:
    """Every output row is the same attention: equal to SDPA's up to float rounding of the sums (bit-identical on
    the project's machines in bf16; compared here against float64 to stay independent of the kernel's blocking)."""
    for queries, length in ((1, 40), (1, 300), (3, 40), (4, 300), (25, 64)):
        for dtype in (torch.bfloat16, torch.float16):
            q, k, v = qkv(queries, dtype, length)
            mask = None if queries == 1 else causal_mask(queries, length)
            out, weights = folded_gqa_attention(GQA, q, k, v, mask)
            expected = sdpa_attention_forward(GQA, q.double(), k.double(), v.double(), mask)[0]
            assert out.shape == (1, queries, 6, 16) and out.dtype == dtype and weights is None
            ours, theirs = sdpa_attention_forward(GQA, q, k, v, mask)[0], expected.to(dtype)
            assert (out.double() - expected).abs().max() <= (ours.double() - expected).abs().max() + 1e-2
            torch.testing.assert_close(out, theirs, atol=1e-2, rtol=1e-2)
    # an additive mask shared by the heads is folded like a boolean one
    q, k, v = qkv(3, torch.bfloat16, 40)
    additive = torch.zeros(1, 1, 3, 40, dtype=torch.bfloat16).masked_fill(~causal_mask(3, 40), float("-inf"))
    assert torch.equal(
        folded_gqa_attention(GQA, q, k, v, additive)[0], folded_gqa_attention(GQA, q, k, v, causal_mask(3, 40))[0]
    )


def test_float32_unmasked_causal_and_per_head_masks_are_sdpa_itself() -> None:
    for queries, dtype, mask in (
        (1, torch.float32, None),
        (3, torch.float32, causal_mask(3, 40)),
        (3, torch.bfloat16, None),  # a causal prefill: SDPA's causal path
        (3, torch.bfloat16, causal_mask(3, 40).expand(1, 6, 3, 40)),  # a mask per head
    ):
        q, k, v = qkv(queries, dtype, 40)
        kwargs = {"is_causal": True} if mask is None else {}
        ours = folded_gqa_attention(GQA, q, k, v, mask, **kwargs)[0]
        assert torch.equal(ours, sdpa_attention_forward(GQA, q, k, v, mask, **kwargs)[0])


def test_a_folded_bf16_model_gives_the_logits_sdpa_gives() -> None:
    """Prefill (SDPA's causal path), a one-token step and a 3-token verify forward on a cache."""
    model = tiny_llama(seed=0).to(torch.bfloat16)
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    logits = {}
    for mode in (SDPA, FOLDED):
        set_attention(model, mode)
        assert attention_kind(model) == mode
        cache = new_cache(model)
        with torch.inference_mode():
            prefill = model(input_ids=ids[:, :8], past_key_values=cache, use_cache=True).logits
            one = model(input_ids=ids[:, 8:9], past_key_values=cache, use_cache=True).logits
            three = model(input_ids=ids[:, 9:12], past_key_values=cache, use_cache=True).logits
        logits[mode] = (prefill, one, three)
    assert torch.equal(logits[SDPA][0], logits[FOLDED][0])
    for theirs, ours in zip(logits[SDPA][1:], logits[FOLDED][1:], strict=True):
        torch.testing.assert_close(ours, theirs, atol=0.05, rtol=0.02)


def test_the_mask_folded_once_per_forward_gives_the_same_outputs_bit_for_bit(monkeypatch) -> None:
    """`folded_mask` hands every layer the mask already folded ([1, 1, groups * q, T], additive): the attention
    (and a whole bf16 model's verify forward) computes exactly what folding the boolean mask in each layer did;
    float32 and ungrouped configs get SDPA's boolean mask untouched, and a pre-folded mask that reaches the SDPA
    fallback is unfolded again."""
    config = SimpleNamespace(num_attention_heads=6, num_key_value_heads=2, head_dim=16)
    sizes = {"batch_size": 1, "q_length": 3, "kv_length": 40, "q_offset": 37}
    plain = sdpa_mask(**sizes)
    folded = folded_mask(**sizes, config=config, dtype=torch.bfloat16)
    assert plain.shape == (1, 1, 3, 40) and folded.shape == (1, 1, 9, 40) and folded.dtype == torch.bfloat16
    for row in range(9):
        assert torch.equal(folded[0, 0, row] == 0, plain[0, 0, row % 3])  # row g * q + i is row i
        assert torch.equal(folded[0, 0, row] == float("-inf"), ~plain[0, 0, row % 3])
    assert torch.equal(folded_mask(**sizes, config=config, dtype=torch.float32), plain)
    ungrouped = SimpleNamespace(num_attention_heads=2, num_key_value_heads=2, head_dim=16)
    assert torch.equal(folded_mask(**sizes, config=ungrouped, dtype=torch.bfloat16), plain)
    assert folded_mask(**{**sizes, "q_length": 1, "q_offset": 39}, config=config, dtype=torch.bfloat16) is None

    q, k, v = qkv(3, torch.bfloat16, 40)
    assert torch.equal(folded_gqa_attention(GQA, q, k, v, folded)[0], folded_gqa_attention(GQA, q, k, v, plain)[0])
    q32, k32, v32 = (t.float() for t in (q, k, v))
    fallback = folded_gqa_attention(GQA, q32, k32, v32, folded.float())[0]  # float32: SDPA on group 0's rows
    assert torch.equal(fallback, sdpa_attention_forward(GQA, q32, k32, v32, plain)[0])

    model = tiny_llama(seed=3).to(torch.bfloat16)
    set_attention(model, FOLDED)
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(3))
    made = []  # the masks the model's forward asked the registry for: the folded path must really be taken

    def recorded(mask_function):
        def make(*args, **kwargs):
            mask = mask_function(*args, **kwargs)
            made.append(None if mask is None else (tuple(mask.shape), mask.dtype))
            return mask

        return make

    logits = []
    for mask_function in (folded_mask, sdpa_mask):  # folded once per forward, then in every layer as before
        monkeypatch.setitem(AttentionMaskInterface._global_mapping, ATTENTION_NAME, recorded(mask_function))
        cache = new_cache(model)
        with torch.inference_mode():
            model(input_ids=ids[:, :8], past_key_values=cache, use_cache=True)
            logits.append(model(input_ids=ids[:, 8:12], past_key_values=cache, use_cache=True).logits)
    assert torch.equal(logits[0], logits[1])
    groups = model.config.num_attention_heads // model.config.num_key_value_heads
    assert ((1, 1, groups * 4, 12), torch.bfloat16) in made and ((1, 1, 4, 12), torch.bool) in made


def test_float32_models_keep_greedy_equality_and_heads_and_trees_follow_the_switch() -> None:
    """float32 is untouched (greedy speculative = autoregressive); a head draft built on a folded bf16 target runs
    through the registered attention, chains and trees (whose verify masks are folded)."""
    from onlinespec.drafts.heads import make_head_draft

    target = tiny_llama(seed=1)
    engine = SpeculativeEngine(target, draft_of(noisy_copy(target, 0.3, seed=4), 96))
    cfg = GenerationConfig(max_new_tokens=32, k=3)
    prompt = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(1))
    outputs = {}
    for mode in (SDPA, FOLDED):
        set_attention(target, mode)
        outputs[mode] = (run_ar(target, prompt, cfg)[0], run_spec(engine, prompt, cfg)[0])
    assert outputs[SDPA] == outputs[FOLDED] and outputs[SDPA][0] == outputs[SDPA][1]

    bf16 = tiny_llama(seed=2).to(torch.bfloat16)
    set_attention(bf16, FOLDED)
    draft = make_head_draft("eagle:fresh", bf16, "tiny")
    assert draft.model.layer.self_attn.config._attn_implementation == bf16.config._attn_implementation
    for tree in (TreeConfig(), TreeConfig("dynamic", depth=3, total_tokens=8)):
        tokens, stats = run_spec(
            SpeculativeEngine(bf16, draft), prompt, GenerationConfig(max_new_tokens=32, k=3, tree=tree)
        )
        assert len(tokens) == 32 and stats.target_forwards <= 32


def test_auto_measures_once_for_reduced_precision_and_the_env_overrides(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert faster_attention({SDPA: [100.0, 400.0], FOLDED: [30.0, 120.0]}) == FOLDED
    assert faster_attention({SDPA: [100.0, 400.0], FOLDED: [98.0, 390.0]}) == SDPA  # under MIN_GAIN
    fp32 = tiny_llama(seed=0)
    assert use_attention(fp32, "auto", tmp_path) == SDPA  # nothing to choose: no measurement
    assert not (tmp_path / "attention").exists()
    bf16 = tiny_llama(seed=0).to(torch.bfloat16)
    chosen = use_attention(bf16, "auto", tmp_path)
    (saved,) = (tmp_path / "attention").glob("*.json")
    record = json.loads(saved.read_text())
    assert chosen == record["choice"] == faster_attention(record["us"]) == attention_kind(bf16)
    assert all(len(record["us"][way]) == 4 and min(record["us"][way]) > 0 for way in (SDPA, FOLDED))
    saved.write_text(json.dumps({**record, "choice": SDPA if chosen == FOLDED else FOLDED}))
    assert use_attention(bf16, "auto", tmp_path) != chosen  # read from the cache, not measured again
    monkeypatch.setenv(ENV, SDPA)
    assert use_attention(bf16, "auto", tmp_path) == SDPA  # the environment decides what auto means
    assert use_attention(bf16, FOLDED, tmp_path) == FOLDED  # an explicit choice stays
    monkeypatch.setenv(ENV, FOLDED)
    assert use_attention(fp32, "auto", tmp_path) == SDPA  # the environment's folded: where it can help
    with pytest.raises(UserError, match="'folded' is not available here: .*float32: --dtype bfloat16"):
        use_attention(fp32, FOLDED, tmp_path)  # asked for by name: refused with the reason
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(UserError, match="unknown attention 'fast'.*auto, sdpa, folded"):
        use_attention(bf16, "auto", tmp_path)


def test_another_attention_implementation_is_left_alone() -> None:
    model = tiny_llama(seed=0).to(torch.bfloat16)
    model.set_attn_implementation("eager")
    set_attention(model, FOLDED)
    assert attention_kind(model) == "eager"


def test_the_verify_cost_curve_is_measured_for_the_attention_it_runs_with(tmp_path) -> None:
    from onlinespec.decoding.verify_cost import cached_verify_cost

    model = tiny_llama(seed=0).to(torch.bfloat16)
    for mode in (SDPA, FOLDED, SDPA):
        set_attention(model, mode)
        cached_verify_cost(model, tmp_path)
    saved = [json.loads(p.read_text())["key"] for p in (tmp_path / "verify-cost").glob("*.json")]
    assert sorted(key.get("attention", SDPA) for key in saved) == [FOLDED, SDPA]
