"""The feature memory (drafts/feature_memory.py): entries by hand, the ring's eviction, saved state, and the hybrid
draft recalling earlier traffic by the target's features: greedy output unchanged, exact sampling, learning in a
session (on, off, private), save and restore."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_ar, run_spec, tiny_llama
from test_hybrid_draft import VOCAB, hybrid
from test_sampling_exact import PASS_P_VALUE, chi2_p_value, exact_two_token_distribution

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.drafts.eagle import EagleDraft
from onlinespec.drafts.feature_memory import FeatureMemory
from onlinespec.drafts.heads import build_head
from onlinespec.drafts.hybrid import HybridDraft
from onlinespec.drafts.lookup import LookupDraft
from onlinespec.online.counting_session import CountingLearning
from onlinespec.online.hybrid_session import HybridLearning
from onlinespec.online.learners import LearnerConfig
from onlinespec.online.session import OnlineConfig

GEN = GenerationConfig(max_new_tokens=32, k=3)


def unit(*values: float) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor(values, dtype=torch.float32), dim=-1)


def test_recall_takes_the_nearest_entry_with_the_same_token_and_its_continuation() -> None:
    memory = FeatureMemory(dim=2, continuation=3, min_similarity=0.8)
    ids = torch.tensor([5, 6, 7, 8, 9, 10])
    # features of positions 0..4 (5 rows; the last is not added: nothing follows its next token)
    features = torch.stack([unit(1, 0), unit(0, 1), unit(1, 1), unit(1, 0), unit(-1, 0)])
    assert memory.add(ids, features) == 4  # positions t = 0..3: key f_t, token x_{t+1}, continuation x_{t+2}..
    assert memory.tokens.tolist() == [6, 7, 8, 9]
    assert memory.following.tolist() == [[7, 8, 9], [8, 9, 10], [9, 10, -1], [10, -1, -1]]
    # token 8 (entry t = 2, key (1, 1)/sqrt 2): cosine with (1, 0.2) is 0.83 >= 0.8
    tokens, similarity = memory.recall(torch.tensor([1.0, 0.2]), 8, k=3)
    assert tokens == [9, 10] and similarity == pytest.approx((1 + 0.2) / (2**0.5 * (1.04**0.5)))
    assert memory.recall(torch.tensor([1.0, 0.2]), 8, k=1)[0] == [9]
    assert memory.recall(torch.tensor([1.0, -0.5]), 8, k=3)[0] == []  # cosine 0.32: too far
    assert memory.recall(torch.tensor([1.0, 0.0]), 42, k=3) == ([], -1.0)  # no entry with this token
    more = FeatureMemory(dim=2, continuation=2, min_similarity=0.0)
    more.add(torch.tensor([1, 2, 3, 4]), torch.stack([unit(1, 0), unit(0, 1)]))
    more.add(torch.tensor([9, 2, 4, 4]), torch.stack([unit(0, 1), unit(0, 1)]))  # token 2 again, key (0, 1)
    assert more.recall(torch.tensor([0.1, 1.0]), 2, k=2)[0] == [4, 4]  # the nearer of the two token-2 entries
    assert more.recall(torch.tensor([1.0, 0.1]), 2, k=2)[0] == [3, 4]


def test_the_ring_keeps_the_newest_entries_and_a_saved_state_loads_back_in_order() -> None:
    memory = FeatureMemory(dim=3, max_entries=4, continuation=1)
    features = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(100, 108)  # 8 tokens: positions 0..5 are added
    assert memory.add(ids, features) == 6 and len(memory) == 4 and memory.evicted == 2
    state = memory.state_tensors()
    assert state["tokens"].tolist() == [103, 104, 105, 106]  # oldest first: the first two were overwritten
    assert state["following"].flatten().tolist() == [104, 105, 106, 107]
    loaded = FeatureMemory(dim=3, max_entries=4, continuation=1)
    loaded.load_state(state, memory.describe())
    torch.testing.assert_close(loaded.state_tensors()["keys"], state["keys"])
    loaded.add(torch.tensor([1, 2, 3]), torch.randn(2, 3))  # one more entry evicts the oldest (103)
    assert loaded.state_tensors()["tokens"].tolist() == [104, 105, 106, 2]
    with pytest.raises(ValueError, match="dim 3, this draft has 5"):
        FeatureMemory(dim=5).load_state(state, memory.describe())
    with pytest.raises(ValueError, match="wrong shapes"):
        memory.load_state({**state, "following": state["following"][:2]}, memory.describe())
    assert len(memory) == 4  # a refused state leaves the live one


def features_of(target: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The target's last hidden states (after its final norm) [L, d], as the engine gives them to a head."""
    return target(ids[None], output_hidden_states=True).hidden_states[-1][0]


def with_memory(target: torch.nn.Module, seed: int, min_similarity: float = 0.8) -> HybridDraft:
    draft = hybrid(target, seed=seed)
    draft.feature_memory = FeatureMemory(target.config.hidden_size, min_similarity=min_similarity)
    return draft


def test_a_request_seen_before_is_drafted_from_the_memory_and_the_output_stays_the_targets() -> None:
    """The memory holds the target's own answer to the prompt (its features and tokens): decoding the prompt
    again, the memory drafts where the request's text has no 2-token match, its proposals are right, and greedy
    output equals autoregressive output token for token. Only the memory was filled: the shared index is empty."""
    target = tiny_llama(seed=4)
    prompt = torch.randint(0, VOCAB, (10,), generator=torch.Generator().manual_seed(4))
    cfg = GenerationConfig(max_new_tokens=40, k=3)
    expected, _ = run_ar(target, prompt, cfg)
    draft = with_memory(target, seed=4)
    ids = torch.cat([prompt, torch.tensor(expected)])
    draft.feature_memory.add(ids, features_of(target, ids))  # the memory alone: the shared index stays empty
    got, stats = run_spec(SpeculativeEngine(target, draft), prompt, cfg)
    assert got == expected
    memory = draft.gate.scores["memory"]
    assert memory.steps >= 3 and memory.first_right == memory.scored, draft.report()
    alone, alone_stats = run_spec(SpeculativeEngine(target, hybrid(target, seed=4)), prompt, cfg)
    assert alone == expected and stats.tau > alone_stats.tau, (stats.tau, alone_stats.tau)


def test_engine_sampling_with_the_memory_drafting_matches_the_target() -> None:
    """P(x1, x2 | prompt) under the target's processed sampling (4 tokens, 600 samples), with the memory holding
    earlier traffic whose features match the prompt's at similarity 0 and above (every query with a token it
    holds recalls): its one-hot proposals are verified by the target's rule like any draft's."""
    vocab = 4
    target = tiny_llama(seed=11, vocab=vocab, layers=1)
    torch.manual_seed(0)
    head = EagleDraft(build_head("eagle", target).eval(), "eagle:fresh")
    memory = FeatureMemory(target.config.hidden_size, min_similarity=-1.0)
    draft = HybridDraft(
        LookupDraft(vocab, min_ngram=2, min_confidence=0.0), head, head_min_confidence=0.3, memory=memory
    )
    traffic = torch.tensor([0, 2, 1, 3, 0, 1, 2, 2, 3])
    draft.learn([traffic], [features_of(target, traffic)])
    prompt = torch.tensor([1, 3, 0, 3, 2, 1])
    sampling = SamplingConfig(temperature=1.0, top_k=3)
    exact = exact_two_token_distribution(target, prompt, sampling)
    engine = SpeculativeEngine(target, draft)
    pairs = []
    for seed in range(600):
        tokens, _ = run_spec(engine, prompt, GenerationConfig(max_new_tokens=4, k=2, sampling=sampling, seed=seed))
        pairs.append(tokens[0] * vocab + tokens[1])
    assert draft.gate.scores["memory"].steps > 50, draft.report()
    assert chi2_p_value(torch.tensor(pairs), exact) > PASS_P_VALUE


def session(target, draft, learner: str = "count", **cfg):
    engine = SpeculativeEngine(target, draft)
    config = OnlineConfig(learner=learner, learner_cfg=LearnerConfig(lr=0.5), round_requests=1, schedule="sync", **cfg)
    kind = CountingLearning if learner == "count" else HybridLearning
    return engine, kind(engine, config)


@pytest.mark.parametrize("learner", ["count", "ogd"])
def test_sessions_fill_the_memory_unless_it_is_off_or_the_request_private(learner: str) -> None:
    target = tiny_llama(seed=6)
    prompt = torch.randint(0, VOCAB, (8,), generator=torch.Generator().manual_seed(6))
    engine, online = session(target, with_memory(target, seed=6), learner)
    with online.private():
        _, stats = run_spec(engine, prompt, GEN)
    online.after_request(stats)
    assert len(engine.draft.feature_memory) == 0
    tokens, stats = run_spec(engine, prompt, GEN)
    record = online.after_request(stats)
    # the committed text the records show: the prompt and all new tokens but the last verify step's choice
    assert record["memory_added"] == len(engine.draft.feature_memory) >= prompt.numel() + len(tokens) - 4
    assert record["memory_entries"] == len(engine.draft.feature_memory)
    assert online.status().draft_memory["memory_entries"] == record["memory_entries"]
    off_engine, off = session(target, with_memory(target, seed=6), learner, feature_memory=False)
    _, stats = run_spec(off_engine, prompt, GEN)
    record = off.after_request(stats)
    assert len(off_engine.draft.feature_memory) == 0 and "memory_added" not in record
    assert off_engine.draft.lookup.shared.entries > 0  # the index still learns


def test_the_memory_is_saved_and_restored_with_the_index(tmp_path: Path) -> None:
    target = tiny_llama(seed=7)
    state = str(tmp_path / "state")
    engine, online = session(target, with_memory(target, seed=7), state_dir=state)
    for seed in range(2):
        _, stats = run_spec(engine, torch.randint(0, VOCAB, (8,), generator=torch.Generator().manual_seed(seed)), GEN)
        online.after_request(stats)
    online.close()
    saved = engine.draft.feature_memory.state_tensors()
    restored_engine, _ = session(target, with_memory(target, seed=7), state_dir=state)
    restored = restored_engine.draft.feature_memory.state_tensors()
    assert len(restored_engine.draft.feature_memory) == len(engine.draft.feature_memory) > 0
    assert all(torch.equal(restored[name], saved[name]) for name in saved)
    assert restored_engine.draft.memory() == engine.draft.memory()
    probe = torch.randint(0, VOCAB, (8,), generator=torch.Generator().manual_seed(0))
    expected, _ = run_ar(target, probe, GEN)
    assert run_spec(restored_engine, probe, GEN)[0] == expected
