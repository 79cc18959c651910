"""The "packed" weight layout (models/packed_linear.py): oneDNN-packed bf16 weights give bit-identical outputs, fall
back to the plain weight wherever the pack is not valid (gradients, a changed weight, a copy), and are offered only
where this machine can run them. On a CPU without oneDNN bf16 each test checks the refusal instead."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import draft_of, noisy_copy, run_ar, run_spec, tiny_llama

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.drafts.heads import build_head
from onlinespec.errors import UserError
from onlinespec.models.packed_linear import PackedLinear, packing_unavailable
from onlinespec.models.weight_layout import (
    PACKED,
    STANDARD,
    TRANSPOSED,
    available_layouts,
    faster_layout,
    set_weight_layout,
    use_weight_layout,
    weight_layout,
)
from onlinespec.online.draft_objective import training_copy


def bf16_tiny(seed: int = 0) -> torch.nn.Module:
    return tiny_llama(seed=seed).to(torch.bfloat16)


def packs_here() -> bool:
    """Whether this machine packs; where it does not, packing must be refused with the reason."""
    model = bf16_tiny()
    reason = packing_unavailable(model)
    if reason is not None:
        assert PACKED not in available_layouts(model)
        with pytest.raises(UserError, match=f"weight layout 'packed' is not available here: {reason}"):
            set_weight_layout(model, PACKED)
    return reason is None


def test_float32_weights_are_not_packed_and_say_why() -> None:
    model = tiny_llama(seed=0)
    assert packing_unavailable(model) == "packed weights need bfloat16 (the model is float32: --dtype bfloat16)"
    assert available_layouts(model) == (STANDARD, TRANSPOSED)
    with pytest.raises(UserError, match="need bfloat16 .*; use --weight-layout auto"):
        set_weight_layout(model, PACKED)


def test_packed_weights_give_bit_identical_logits_and_keep_names_and_ties() -> None:
    if not packs_here():
        return
    model = bf16_tiny()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    state_keys = model.state_dict().keys()
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(ids).logits
    set_weight_layout(model, PACKED)
    assert weight_layout(model) == PACKED
    assert all(isinstance(m, PackedLinear) for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert dict(model.named_parameters()).keys() == before.keys() and model.state_dict().keys() == state_keys
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    with torch.inference_mode():
        for size in (1, 3, 12):  # one-token steps, verifies, a prefill
            assert torch.equal(model(ids[:, :size]).logits, expected[:, :size])
    set_weight_layout(model, STANDARD)
    assert weight_layout(model) == STANDARD and not any(isinstance(m, PackedLinear) for m in model.modules())


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_outputs_are_the_same_packed_and_standard(seed: int) -> None:
    """Bit-identical logits mean the same greedy tokens, autoregressive and speculative."""
    if not packs_here():
        return
    target = bf16_tiny(seed)
    engine = SpeculativeEngine(target, draft_of(noisy_copy(target, 0.3, seed=seed + 3), 96))
    cfg = GenerationConfig(max_new_tokens=40, k=3)
    prompt = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(seed))
    outputs = {}
    for layout in (STANDARD, PACKED):
        set_weight_layout(target, layout)
        outputs[layout] = (run_ar(target, prompt, cfg)[0], run_spec(engine, prompt, cfg)[0])
    assert outputs[PACKED] == outputs[STANDARD]


def test_gradients_use_the_plain_weight_and_a_changed_weight_is_packed_again() -> None:
    if not packs_here():
        return
    layer = bf16_tiny().model.layers[0].mlp.down_proj
    plain = copy.deepcopy(layer)
    set_weight_layout(layer, PACKED)
    x = torch.randn(2, 5, layer.in_features, dtype=torch.bfloat16, requires_grad=True)
    x_plain = x.detach().clone().requires_grad_(True)
    layer(x).float().square().sum().backward()  # the packed kernel has no backward: the plain weight runs
    plain(x_plain).float().square().sum().backward()
    assert torch.equal(x.grad, x_plain.grad)
    with torch.no_grad():
        old_pack = layer.packed
        layer.weight.mul_(2.0)  # published in place, as an online update is
        assert weight_layout(layer) == STANDARD  # the pack no longer matches the weight
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight))  # packed again, then used
        assert layer.packed is not old_pack and weight_layout(layer) == PACKED


def test_a_head_drafting_for_a_packed_target_is_packed_and_drafts_the_same() -> None:
    """Head drafts run in the target's dtype: with a packed target their layers are packed too (drafts/heads.py),
    drafting exactly what the plain head drafts, also after an online update published in place."""
    if not packs_here():
        return
    from onlinespec.drafts.heads import make_head_draft

    target = bf16_tiny(0)
    prompt = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(2))
    cfg = GenerationConfig(max_new_tokens=24, k=3)
    outputs = {}
    for layout in (STANDARD, PACKED):
        set_weight_layout(target, layout)
        draft = make_head_draft("eagle:fresh", target, "tiny")
        torch.manual_seed(5)
        with torch.no_grad():
            for p in draft.model.parameters():
                if p.requires_grad:
                    p.add_(0.01 * torch.randn_like(p))  # an update, published in place
        packed = [m for m in draft.model.modules() if isinstance(m, PackedLinear)]
        assert bool(packed) == (layout == PACKED)
        outputs[layout] = run_spec(SpeculativeEngine(target, draft), prompt, cfg)
    assert outputs[PACKED][0] == outputs[STANDARD][0]
    assert outputs[PACKED][1].accepted == outputs[STANDARD][1].accepted


def test_copies_share_the_pack_only_with_the_weight() -> None:
    """The drafts' training copies deep-copy modules that hold the target's (packed) LM head; oneDNN's packed
    tensors cannot be copied, so a copy shares the pack where it shares the weight and drops it elsewhere."""
    if not packs_here():
        return
    target = bf16_tiny()
    set_weight_layout(target, PACKED)
    clone = copy.deepcopy(target)
    assert weight_layout(clone) == STANDARD and weight_layout(target) == PACKED
    ids = torch.randint(0, 96, (1, 6), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(clone(ids).logits, target(ids).logits)
    head = build_head("eagle", target)  # holds the target's LM head module, frozen
    trained = training_copy(head, [n for n, p in head.named_parameters() if p.requires_grad])
    assert trained.vocab.lm_head is not head.vocab.lm_head and trained.vocab.lm_head.weight is target.lm_head.weight
    assert trained.vocab.lm_head.packed is target.lm_head.packed


def test_auto_offers_packed_where_it_runs_and_the_rule_takes_the_fastest(tmp_path) -> None:
    assert faster_layout({STANDARD: [10.0, 10.0], TRANSPOSED: [9.0, 9.0], PACKED: [8.0, 8.0]}) == PACKED
    assert faster_layout({STANDARD: [10.0, 10.0], TRANSPOSED: [9.0, 9.0], PACKED: [9.7, 9.7]}) == TRANSPOSED
    assert faster_layout({STANDARD: [10.0, 10.0], TRANSPOSED: [9.8, 9.8], PACKED: [9.7, 9.7]}) == STANDARD
    model = bf16_tiny()
    chosen = use_weight_layout(model, "auto", tmp_path)
    assert chosen in available_layouts(model) and weight_layout(model) == chosen
    (saved,) = (tmp_path / "weight-layout").glob("*.json")
    assert set(json.loads(saved.read_text())["ms"]) == set(available_layouts(model))


def test_siblings_share_one_product_in_any_order_and_repack_after_a_change() -> None:
    """q, k, v (and gate, up) of a packed model form one group: each sibling's output is exactly its own F.linear,
    whether called in the model's order, alone, twice or out of order, with or without biases (Qwen2's q/k/v have
    them); a weight changed in place is stacked and packed again; the group keeps nothing after the last sibling."""
    if not packs_here():
        return
    model = bf16_tiny()
    set_weight_layout(model, PACKED)
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    group = attention.q_proj.group
    assert group is not None and [m.group for m in (attention.k_proj, attention.v_proj)] == [group, group]
    assert mlp.gate_proj.group is mlp.up_proj.group is not None and mlp.down_proj.group is None
    assert model.lm_head.group is None and weight_layout(model) == PACKED
    packed = group.packed
    assert packed is not None and mlp.gate_proj.group.packed is not None  # packed with the layout, not at first use
    group.packed, group.packed_for = None, ()  # the forward runs through its groups: taken away, the pack returns
    with torch.inference_mode():
        model(torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(4)))
    assert group.packed is not None and group.last is None

    layer = torch.nn.Module()
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(layer, name, torch.nn.Linear(32, 48 if name == "q_proj" else 16, bias=True).to(torch.bfloat16))
    expected = {}
    x = torch.randn(1, 3, 32, dtype=torch.bfloat16)
    for name in ("q_proj", "k_proj", "v_proj"):
        module = getattr(layer, name)
        expected[name] = torch.nn.functional.linear(x, module.weight, module.bias)
    set_weight_layout(layer, PACKED)
    biased = layer.q_proj.group
    assert biased is not None and biased.bias is not None and biased.bias.shape == (80,)  # biases stacked too
    with torch.inference_mode():
        for order in (("q_proj", "k_proj", "v_proj"), ("v_proj", "k_proj", "q_proj"), ("k_proj", "k_proj")):
            for name in order:
                assert torch.equal(getattr(layer, name)(x), expected[name]), (order, name)
        assert torch.equal(layer.q_proj(x), expected["q_proj"]) and biased.last is not None
        other = torch.randn(1, 3, 32, dtype=torch.bfloat16)  # another input: computed for itself, not q's
        k = layer.k_proj
        assert torch.equal(k(other), torch.nn.functional.linear(other, k.weight, k.bias))
        layer.v_proj(other)
        assert biased.last is None  # the last sibling took its slice: nothing held between calls
    with torch.no_grad():
        layer.k_proj.weight.mul_(2.0)  # published in place, as an online update is
        changed = torch.nn.functional.linear(x, layer.k_proj.weight, layer.k_proj.bias)
        old_pack = biased.packed
        assert torch.equal(layer.q_proj(x), expected["q_proj"]) and torch.equal(layer.k_proj(x), changed)
        assert biased.packed is not old_pack
