"""Online learning of the hybrid draft (online/hybrid_session.py): the head by gradient and the lookup's shared
index by counting, in one session; privacy; save and restore of both parts; refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_ar, run_spec, tiny_llama
from test_hybrid_draft import GREEDY, VOCAB, hybrid

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.drafts.lookup import LookupDraft
from onlinespec.errors import UserError
from onlinespec.online.counting_draft import CountingDraft
from onlinespec.online.counting_session import CountingLearning
from onlinespec.online.hybrid_session import HybridLearning
from onlinespec.online.learners import LearnerConfig
from onlinespec.online.session import OnlineConfig
from onlinespec.online.trainable_draft import TrainableDraft

GEN = GenerationConfig(max_new_tokens=32, k=4)


def learning(seed: int = 8, learner: str = "ogd", **cfg) -> tuple[torch.nn.Module, SpeculativeEngine, HybridLearning]:
    target = tiny_llama(seed=seed)
    draft = hybrid(target, seed=seed)
    engine = SpeculativeEngine(target, draft)
    config = OnlineConfig(
        **{"learner": learner, "learner_cfg": LearnerConfig(lr=0.5), "round_requests": 1, "schedule": "sync", **cfg}
    )
    return target, engine, HybridLearning(engine, config)


def head_weights(engine: SpeculativeEngine) -> dict[str, torch.Tensor]:
    named = dict(engine.draft.model.named_parameters())
    return {n: named[n].detach().clone() for n in engine.draft.trainable}


def prompts(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (8,), generator=gen) for _ in range(n)]


def test_the_hybrid_draft_is_both_and_the_pipeline_picks_the_session_that_does_both() -> None:
    from onlinespec.models.resolve import LoadedModel
    from onlinespec.pipeline import Pipeline

    target = tiny_llama(seed=8)
    draft = hybrid(target)
    assert isinstance(draft, TrainableDraft) and isinstance(draft, CountingDraft)
    pipe = Pipeline(LoadedModel(spec="tiny", model=target, tokenizer=None), draft)
    assert type(pipe.enable_learning(OnlineConfig(learner="ogd"))) is HybridLearning
    lookup = Pipeline(LoadedModel(spec="tiny", model=target, tokenizer=None), LookupDraft(VOCAB))
    assert type(lookup.enable_learning(OnlineConfig(learner="ogd"))) is CountingLearning
    index_only = Pipeline(LoadedModel(spec="tiny", model=target, tokenizer=None), hybrid(target))
    assert type(index_only.enable_learning(OnlineConfig(learner="count"))) is CountingLearning


def test_learner_count_fills_the_index_and_leaves_the_head_frozen(tmp_path: Path) -> None:
    """`count` on a hybrid: the index learns by counting, the head is never updated; its state resumes exactly,
    and the two kinds of state (index alone, head and index) refuse each other with a message."""
    target = tiny_llama(seed=8)
    engine = SpeculativeEngine(target, hybrid(target, seed=8))
    state = str(tmp_path / "count")
    online = CountingLearning(engine, OnlineConfig(learner="count", round_requests=1, state_dir=state))
    before = head_weights(engine)
    first = prompts(1)[0]
    expected, _ = run_ar(target, first, GEN)
    _, stats1 = run_spec(engine, first, GEN)
    record = online.after_request(stats1)
    assert record["learner"] == "count" and engine.draft.memory()["entries"] > 0
    assert all(torch.equal(w, before[n]) for n, w in head_weights(engine).items())
    got, stats2 = run_spec(engine, first, GEN)
    assert got == expected and stats2.tau > stats1.tau + 0.5, (stats1.tau, stats2.tau)
    online.close()

    restored_engine = SpeculativeEngine(target, hybrid(target, seed=8))
    CountingLearning(restored_engine, OnlineConfig(learner="count", round_requests=1, state_dir=state))
    assert restored_engine.draft.memory() == engine.draft.memory()
    with pytest.raises(UserError, match="saved by learner 'count'.*--learner count"):
        learning(state_dir=state)
    both = str(tmp_path / "both")
    _, both_engine, both_session = learning(state_dir=both)
    _, stats = run_spec(both_engine, first, GEN)
    both_session.after_request(stats)
    both_session.close()
    with pytest.raises(UserError, match="holds a trained head as well as the index .*learner 'ogd'"):
        CountingLearning(
            SpeculativeEngine(target, hybrid(target, seed=8)), OnlineConfig(learner="count", state_dir=both)
        )


def test_a_round_trains_the_head_and_fills_the_index_and_a_repeated_request_drafts_from_it() -> None:
    target, engine, online = learning()
    draft = engine.draft
    before = head_weights(engine)
    first = prompts(1)[0]
    expected, _ = run_ar(target, first, GEN)
    _, stats1 = run_spec(engine, first, GEN)
    record = online.after_request(stats1)
    assert record["index_added"] > 0 and record["index_entries"] == draft.memory()["entries"] > 0
    assert record["index_update_s"] >= 0 and record["positions"] > 0
    assert all(not torch.equal(w, before[n]) for n, w in head_weights(engine).items())  # the head learned too
    lookup_steps = draft.steps["lookup"]
    got, stats2 = run_spec(engine, first, GEN)  # the same request again: its text is in the shared index now
    assert got == expected  # still the target's output, token for token
    assert draft.steps["lookup"] - lookup_steps >= 3 and stats2.tau > stats1.tau + 0.5, (stats1.tau, stats2.tau)


def test_the_index_learns_after_each_request_and_the_head_at_the_round_end() -> None:
    """Rounds of 2: after the first request its text is in the index already (the head untouched until the
    boundary), so the same request again drafts from earlier traffic within the round; the round record sums the
    index's two updates."""
    target, engine, online = learning(round_requests=2)
    before, first = head_weights(engine), prompts(1)[0]
    _, stats1 = run_spec(engine, first, GEN)
    assert online.after_request(stats1) is None and engine.draft.memory()["entries"] > 0
    assert all(torch.equal(w, before[n]) for n, w in head_weights(engine).items())
    lookup_steps = engine.draft.steps["lookup"]
    got, stats2 = run_spec(engine, first, GEN)
    assert got == run_ar(target, first, GEN)[0] and engine.draft.steps["lookup"] - lookup_steps >= 3
    record = online.after_request(stats2)
    assert record["index_updates"] == 2 and record["update_blocking_s"] >= record["index_update_s"] > 0
    assert all(not torch.equal(w, before[n]) for n, w in head_weights(engine).items())


def test_private_requests_teach_neither_part() -> None:
    _, engine, online = learning()
    before = head_weights(engine)
    with online.private():
        _, stats = run_spec(engine, prompts(1)[0], GEN)
    online.after_request(stats)  # a boundary with nothing learned from
    assert engine.draft.memory()["entries"] == 0
    assert all(torch.equal(w, before[n]) for n, w in head_weights(engine).items())


def test_static_freezes_both_parts() -> None:
    _, engine, online = learning(learner="static")
    before = head_weights(engine)
    for p in prompts(2):
        _, stats = run_spec(engine, p, GEN)
        online.after_request(stats)
    assert engine.draft.memory()["entries"] == 0
    assert all(torch.equal(w, before[n]) for n, w in head_weights(engine).items())


def test_save_and_restore_give_back_the_head_and_the_index(tmp_path: Path) -> None:
    """Also the verify-cost rule's per-source acceptance rates, so a restarted server cuts proposals as the one it
    replaces did (not from no observations)."""
    state = str(tmp_path / "state")
    _, engine, online = learning(state_dir=state)
    for p in prompts(2):
        _, stats = run_spec(engine, p, GEN)
        online.after_request(stats)
    online.close()
    weights, memory, rates = head_weights(engine), engine.draft.memory(), engine.acceptance.to_dict()
    assert any(rates["sources"]["head"]["reached"])
    probe = prompts(1, seed=5)[0]
    probe_tokens, probe_stats = run_spec(engine, probe, GEN)

    _, restored_engine, restored = learning(state_dir=state)
    assert restored.status().round == 2 and restored_engine.draft.memory() == memory
    assert restored_engine.acceptance.to_dict() == rates
    assert learning(state_dir=str(tmp_path / "empty"))[1].acceptance.to_dict() == {"sources": {}}
    restored_weights = head_weights(restored_engine)
    assert all(torch.equal(restored_weights[n], w) for n, w in weights.items())
    tokens, stats = run_spec(restored_engine, probe, GEN)
    assert tokens == probe_tokens and stats.accepted == probe_stats.accepted


def test_a_state_of_another_draft_is_refused(tmp_path: Path) -> None:
    lookup_state = str(tmp_path / "lookup")
    target = tiny_llama(seed=8)
    lookup_engine = SpeculativeEngine(target, LookupDraft(VOCAB))
    lookup_session = CountingLearning(
        lookup_engine, OnlineConfig(learner="count", round_requests=1, state_dir=lookup_state)
    )
    _, stats = run_spec(lookup_engine, prompts(1)[0], GEN)
    lookup_session.after_request(stats)
    lookup_session.close()
    with pytest.raises(UserError, match="was saved for draft 'lookup', not 'hybrid'"):
        learning(state_dir=lookup_state)


def test_earlier_traffic_drafts_only_from_a_full_length_match() -> None:
    """The request's own text drafts from a 2-token match, earlier traffic only from a 4-token one."""
    target = tiny_llama(seed=8)
    draft = hybrid(target)
    draft.learn([torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])])
    assert draft.memory()["entries"] == 4  # (1,2,3,4)->5 ... (4,5,6,7)->8: no 2- or 3-grams kept
    lookup = draft.lookup
    lookup.begin(torch.tensor([9, 9, 3, 4]))
    assert lookup.propose(torch.tensor([9, 9, 3, 4]), 3, GREEDY, None).tokens.numel() == 0  # only (3, 4) matches
    lookup.begin(torch.tensor([9, 1, 2, 3, 4]))
    assert lookup.propose(torch.tensor([9, 1, 2, 3, 4]), 3, GREEDY, None).tokens.tolist() == [5, 6, 7]


def test_round_records_and_telemetry_say_which_source_drafted(tmp_path: Path) -> None:
    """Each round record carries what each source drafted in that round (the report's difference since the last
    boundary), and `--telemetry` writes it: the repeated request drafts from earlier traffic in round 2 only."""
    import json

    target = tiny_llama(seed=8)
    engine = SpeculativeEngine(target, hybrid(target, seed=8))
    telemetry = tmp_path / "rounds.jsonl"
    online = CountingLearning(engine, OnlineConfig(learner="count", round_requests=1, telemetry=str(telemetry)))
    prompt = prompts(1)[0]
    records = []
    for _ in range(2):
        _, stats = run_spec(engine, prompt, GEN)
        records.append(online.after_request(stats))
    first, second = (r["sources"] for r in records)
    assert set(first) == {"request", "shared", "head"} and first["shared"]["steps"] == 0 and first["head"]["steps"] > 0
    assert second["shared"]["steps"] > 0, second
    report = engine.draft.report()
    for source in first:  # the rounds' counts add up to the draft's totals
        for key in ("steps", "scored", "first_right", "matched", "held_back"):
            assert first[source][key] + second[source][key] == report[source][key]
    lines = [json.loads(line) for line in telemetry.read_text().splitlines()]
    assert [line["sources"] for line in lines] == [first, second]
