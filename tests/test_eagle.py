"""EAGLE head draft: greedy equality for chain and trees, tree mask, KV compaction, save/load, online updates."""

from __future__ import annotations

import torch
from conftest import run_ar, run_spec, tiny_llama
from test_kv_rollback import assert_same_cache, fresh_prefill

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.decoding.tree import TreeConfig, ancestor_mask, compact_cache, static_tree_shape
from onlinespec.drafts.eagle import EagleDraft
from onlinespec.drafts.head_store import save_head
from onlinespec.drafts.heads import build_head, load_head
from onlinespec.warmup.distill import agreement, batch_loss
from onlinespec.warmup.teacher import teacher_pass

TREES = [
    TreeConfig(),
    TreeConfig(kind="static"),
    TreeConfig(kind="dynamic", depth=4, top_k=3, total_tokens=12),
]


def own_text(target, n: int = 12, seed: int = 0) -> list[list[int]]:
    """The target's greedy continuations of random prompts: the text a draft must learn to predict."""
    gen = torch.Generator().manual_seed(seed)
    sequences = []
    for _ in range(n):
        prompt = torch.randint(0, 96, (6,), generator=gen)
        tokens, _ = run_ar(target, prompt, GenerationConfig(max_new_tokens=40))
        sequences.append(prompt.tolist() + tokens)
    return sequences


def distilled_head(target, vocab_ids=None, steps: int = 80):
    """A fresh EAGLE head trained briefly on the target's own text from `own_text(target)`, so that drafts for
    those prompts get accepted (a tiny random target gives too little structure to generalise from)."""
    torch.manual_seed(0)
    head = build_head("eagle", target, vocab_ids)
    batch = teacher_pass(target, own_text(target), top_k=16, pad_id=0)
    params = [dict(head.named_parameters())[n] for n in head.trainable_names()]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(steps):
        loss, _ = batch_loss(head, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return head.eval()


def test_tree_mask_each_node_sees_exactly_its_ancestors() -> None:
    shape = static_tree_shape(25, 5)
    assert len(shape) == 25 and max(len(p) for p in shape) == 5
    index = {path: i for i, path in enumerate(shape)}
    parents = [index.get(path[:-1], -1) for path in shape]
    mask = ancestor_mask(parents, include_root=True)
    for i, path in enumerate(shape):
        ancestors = {index[path[:j]] + 1 for j in range(1, len(path))} | {0, i + 1}
        assert set(torch.nonzero(mask[i + 1]).flatten().tolist()) == ancestors


def test_compaction_equals_a_fresh_prefill_of_the_accepted_path() -> None:
    target = tiny_llama(seed=41)
    prefix = torch.tensor([3, 9, 27, 81 % 96, 50])
    cache = fresh_prefill(target, prefix)
    # root -> node 0 -> (node 1 -> node 3, node 2); the accepted path is nodes 0, 1, 3
    tokens = torch.tensor([11, 12, 13, 14])
    parents = [-1, 0, 0, 1]
    from onlinespec.decoding.tree import additive_mask

    mask = additive_mask(ancestor_mask(parents, include_root=True), prefix.numel(), torch.float32)
    depths = [1, 2, 2, 3]
    positions = torch.tensor([[prefix.numel()] + [prefix.numel() + d for d in depths]])
    with torch.no_grad():
        target(
            input_ids=torch.cat([torch.tensor([7]), tokens])[None],
            past_key_values=cache,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
        )
    compact_cache(cache, prefix.numel(), [0, 0 + 1, 1 + 1, 3 + 1])  # rows: root, nodes 0, 1, 3
    assert_same_cache(cache, fresh_prefill(target, torch.cat([prefix, torch.tensor([7, 11, 12, 14])])))


def test_a_warmed_head_is_accepted_and_greedy_output_equals_autoregressive() -> None:
    target = tiny_llama(seed=42)
    for vocab_ids in (None, torch.arange(0, 96, 2)):
        head = distilled_head(target, vocab_ids)
        for sequence in own_text(target)[:2]:
            prompt = torch.tensor(sequence[:6])
            expected, _ = run_ar(target, prompt, GenerationConfig(max_new_tokens=30))
            for tree in TREES:
                engine = SpeculativeEngine(target, EagleDraft(head, "eagle"))
                tokens, stats = run_spec(engine, prompt, GenerationConfig(max_new_tokens=30, k=3, tree=tree))
                assert tokens == expected, (tree.kind, vocab_ids is None)
                assert stats.accepted > 0, tree.kind  # accept paths (and tree compaction) really ran


def test_target_cache_equals_fresh_prefill_after_every_tree_step() -> None:
    target = tiny_llama(seed=43)
    head = distilled_head(target)
    prompt = torch.tensor(own_text(target)[0][:6])
    for tree in TREES[1:]:
        engine = SpeculativeEngine(target, EagleDraft(head, "eagle"))
        cfg = GenerationConfig(max_new_tokens=40, tree=tree)
        stop, stats = StopCriteria(cfg.max_new_tokens, frozenset()), RequestStats()
        for _ in engine.stream(prompt, cfg, stop, stats):
            committed = torch.cat([prompt, torch.tensor(stop.token_ids)])
            assert_same_cache(engine.target_cache, fresh_prefill(target, committed[:-1]))
        assert stats.accepted > 0


def test_distillation_fits_the_target_and_survives_save_and_load(tmp_path) -> None:
    target = tiny_llama(seed=44)
    # A tiny random target has little structure to generalise from, so this checks fitting of its own text.
    held = teacher_pass(target, own_text(target), top_k=16, pad_id=0)
    untrained = agreement(build_head("eagle", target), [held])[0]
    head = distilled_head(target, torch.arange(0, 96, 3))
    trained = agreement(head, [held])[0]
    assert trained > untrained + 0.1  # a third of the vocabulary caps what it can reach
    save_head(tmp_path / "head", head, target)
    loaded = load_head(tmp_path / "head", target, "eagle")
    assert agreement(loaded, [held])[0] == trained
    assert torch.equal(loaded.vocab.ids, head.vocab.ids)


def test_online_learning_updates_the_head_and_the_next_round_drafts_with_it() -> None:
    from onlinespec.online.learners import LearnerConfig
    from onlinespec.online.session import OnlineConfig, OnlineLearning

    target = tiny_llama(seed=45)
    head = build_head("eagle", target).eval()
    draft = EagleDraft(head, "eagle")
    engine = SpeculativeEngine(target, draft)
    online = OnlineLearning(
        engine, OnlineConfig(learner="ogd", learner_cfg=LearnerConfig(lr=0.5), round_requests=2, schedule="sync")
    )
    before = {n: p.detach().clone() for n, p in head.named_parameters() if n in draft.trainable}
    sequences = own_text(target, n=8)
    alphas = []
    for sequence in sequences * 2:  # the same prompts again: the learned head must now be accepted more
        _, stats = run_spec(engine, torch.tensor(sequence[:6]), GenerationConfig(max_new_tokens=24, k=3))
        online.after_request(stats)
        alphas.append(stats.accepted / stats.drafted)
    changed = [n for n, p in head.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert set(changed) == set(draft.trainable)  # the live head holds the published weights
    assert online._history[0]["positions"] > 0 and "loss" in online._history[0]
    first, second = sum(alphas[:8]) / 8, sum(alphas[8:]) / 8
    assert second > 1.5 * first and second > first + 0.05  # measured: 0.087 -> 0.184
    frozen = [n for n, _ in head.named_parameters() if n not in before]
    assert frozen and all(
        p.data_ptr() in {q.data_ptr() for q in target.parameters()} for n, p in head.named_parameters() if n in frozen
    )  # embed/LM head stay the target's own


def test_auto_stands_for_the_hybrid_with_the_bundled_head_when_there_is_one_else_lookup() -> None:
    from onlinespec.drafts import FALLBACK_DRAFT, resolve_draft_spec

    assert resolve_draft_spec("auto", "smollm2-135m") == "hybrid"  # lookup + the head in src/onlinespec/heads/
    assert resolve_draft_spec("auto", "/some/other/model") == FALLBACK_DRAFT == "lookup"
    assert resolve_draft_spec("medusa:fresh", "smollm2-135m") == "medusa:fresh"
