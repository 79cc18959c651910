"""The lookup draft (drafts/lookup.py) and its learning without gradients (online/counting_session.py).

Exactness (greedy equality in fp32, a chi-square test of speculative sampling), learning across requests, the
memory bound and its eviction rule, persistence (round trip, refusal of mismatched or bad state), privacy.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import pytest
import torch
from conftest import damaged_draft, run_ar, run_spec, save_tiny_model_dir, tiny_llama
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sampling_exact import PASS_P_VALUE, chi2_p_value, exact_two_token_distribution

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.verify import verify_sampling
from onlinespec.drafts import parse_draft_spec
from onlinespec.drafts.lookup import LookupDraft
from onlinespec.drafts.ngram_index import NgramIndex
from onlinespec.errors import UserError
from onlinespec.online.counting_draft import CountingDraft
from onlinespec.online.counting_session import CountingLearning
from onlinespec.online.session import OnlineConfig, OnlineLearning
from onlinespec.online.state_store import save_state
from onlinespec.online.trainable_draft import TrainableDraft

VOCAB = 96
GEN = GenerationConfig(max_new_tokens=40, k=4)


def random_texts(count: int, length: int, vocab: int = VOCAB, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (length,), generator=gen) for _ in range(count)]


def session(draft: LookupDraft, learner: str = "count", **cfg) -> tuple[SpeculativeEngine, CountingLearning]:
    engine = SpeculativeEngine(tiny_llama(seed=0, vocab=draft.vocab), draft)
    return engine, CountingLearning(engine, OnlineConfig(**{"learner": learner, "round_requests": 1, **cfg}))


def test_it_is_a_counting_draft_not_a_trainable_one() -> None:
    draft = LookupDraft(VOCAB)
    assert isinstance(draft, CountingDraft) and not isinstance(draft, TrainableDraft)
    with pytest.raises(UserError, match="does not support draft 'lookup'"):
        OnlineLearning(SpeculativeEngine(tiny_llama(), draft), OnlineConfig(learner="ogd"))
    target = tiny_llama()
    with pytest.raises(UserError, match="learner 'count' learns drafts without gradients"):
        OnlineLearning(SpeculativeEngine(target, damaged_draft(target)), OnlineConfig(learner="count"))


def test_greedy_output_equals_autoregressive_output() -> None:
    """fp32, a draft that has learned from earlier requests (some of them the same prompts): proposals come from
    the request itself and from the shared index, many are accepted and many rejected, output never changes."""
    target = tiny_llama(seed=0)
    prompts = random_texts(3, 6, seed=1) + [torch.tensor([5, 6, 7, 5, 6, 7, 5, 6])]
    cfg = GenerationConfig(max_new_tokens=32)
    expected = [run_ar(target, prompt, cfg)[0] for prompt in prompts]
    for k in (1, 4):
        draft = LookupDraft(VOCAB, min_confidence=0.0)
        draft.learn(random_texts(20, 30, seed=2))
        engine = SpeculativeEngine(target, draft)
        drafted = accepted = 0
        for prompt, reference in list(zip(prompts, expected, strict=True)) * 2:
            tokens, stats = run_spec(engine, prompt, GenerationConfig(max_new_tokens=32, k=k))
            assert tokens == reference
            draft.learn([torch.cat([prompt, torch.tensor(tokens)])])
            drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
        assert 0 < accepted < drafted


def test_greedy_drafts_the_most_frequent_continuation_with_q_its_frequency() -> None:
    draft = LookupDraft(10, max_ngram=2, min_confidence=0.0)
    draft.learn([torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]), torch.tensor([2, 9])])
    draft.begin(torch.tensor([7, 1]))
    proposal = draft.propose(torch.tensor([7, 1, 2]), 2, SamplingConfig(), None)
    # (1, 2) -> {3: 2, 4: 1}: draft 3 with q = 2/3; then (2, 3) is unknown, (3,) -> nothing: the chain stops
    assert proposal.tokens.tolist() == [3] and proposal.probs is None
    q = proposal.logits[0].exp()
    assert torch.allclose(q[[3, 4]], torch.tensor([2 / 3, 1 / 3])) and float(q.sum()) == pytest.approx(1.0)
    assert (proposal.logits[0, [0, 1, 2, 5, 6, 7, 8, 9]] == float("-inf")).all()
    # the request's own match wins at equal length: (1,) -> 2 and (1, 2) -> 5 in the request, not (1, 2) -> 3
    draft.begin(torch.tensor([1, 2, 5, 7, 1]))
    assert draft.propose(torch.tensor([1, 2, 5, 7, 1]), 2, SamplingConfig(), None).tokens.tolist() == [2, 5]


def test_the_confidence_gate_shortens_chains_and_nothing_to_propose_is_a_plain_step() -> None:
    draft = LookupDraft(10, max_ngram=1, min_confidence=0.5)
    draft.learn([torch.tensor([1, 2, 1, 3, 1, 2])])  # 1 -> {2: 2/3, 3: 1/3}; 2 -> {1: 1}; 3 -> {1: 1}
    draft.begin(torch.tensor([2]))
    assert draft.propose(torch.tensor([2]), 4, SamplingConfig(), None).tokens.tolist() == [1, 2, 1]  # 1, 2/3, 2/3
    draft.begin(torch.tensor([8]))
    empty = draft.propose(torch.tensor([8]), 4, SamplingConfig(), None)
    assert empty.tokens.shape == (0,) and empty.logits.shape == (0, 10)
    target = tiny_llama(seed=0, vocab=10)
    engine = SpeculativeEngine(target, LookupDraft(10))  # empty index, a prompt with no repeats: plain steps
    tokens, stats = run_spec(engine, torch.tensor([0, 1, 2]), GenerationConfig(max_new_tokens=6, k=3))
    assert tokens == run_ar(target, torch.tensor([0, 1, 2]), GenerationConfig(max_new_tokens=6))[0]


def emitted_pairs(draft: LookupDraft, p: torch.Tensor, sampling: SamplingConfig, trials: int) -> torch.Tensor:
    """Verify the draft's proposals (k = 2) against a target whose next-token distribution at the i-th emitted
    position is p[i] whatever the context: the first two emitted tokens of every trial, [trials, 2]."""
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(trials):
        draft.begin(torch.tensor([1, 4]))
        proposal = draft.propose(torch.tensor([1, 4, 2]), 2, sampling, gen)
        k = proposal.tokens.shape[0]
        n, nxt = verify_sampling(p[: k + 1], proposal.probs, proposal.tokens, gen)
        emitted = proposal.tokens[:n].tolist() + [int(nxt)]
        if len(emitted) == 1:  # a second step from the context this one committed
            follow = draft.propose(torch.tensor([1, 4, 2, emitted[0]]), 2, sampling, gen)
            m, nxt = verify_sampling(p[1 : follow.tokens.shape[0] + 2], follow.probs, follow.tokens, gen)
            emitted += follow.tokens[:m].tolist()[:1] or [int(nxt)]
        pairs.append(emitted[:2])
    return torch.tensor(pairs)


# After 2, and after each of 0, 3 and 5, the three others follow about equally often: q spreads over 2-3 tokens.
SPREAD = torch.tensor([2, 0, 2, 3, 2, 5, 2, 0, 2, 3, 2, 0, 2, 5, 0, 3, 0, 5, 3, 0, 3, 5, 5, 0, 5, 3])


@pytest.mark.parametrize("min_confidence", [0.0, 0.3])
def test_lookup_proposals_keep_speculative_sampling_exact(min_confidence: float) -> None:
    """Chi-square tests (tests/test_sampling_exact.py's helper) of the first and second emitted tokens against the
    target's distributions; q (counts over a 6-token vocabulary) is far from p, so many drafts are rejected.
    With the gate on, chains are cut by the q of tokens already drawn. Measured: the same test fails with
    p-values of 1e-34 and below for a gate that drops a token after drawing it (keeping the likely ones)."""
    vocab = 6
    draft = LookupDraft(vocab, max_ngram=2, min_confidence=min_confidence)
    draft.learn([SPREAD])
    gen = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(4, vocab, generator=gen) * 1.5, dim=-1)
    pairs = emitted_pairs(draft, p, SamplingConfig(temperature=0.8), trials=6000)
    assert chi2_p_value(pairs[:, 0], p[0]) > PASS_P_VALUE
    assert chi2_p_value(pairs[:, 1], p[1]) > PASS_P_VALUE


def test_engine_sampling_with_the_lookup_draft_matches_the_target() -> None:
    """The same through the engine on a tiny model, as tests/test_sampling_exact.py does for a model draft:
    P(x1, x2 | prompt) under the target's own processed sampling (4 tokens: 16 cells for 600 samples), x2 verified
    against a lookup proposal."""
    vocab = 4
    target = tiny_llama(seed=11, vocab=vocab, layers=1)  # one layer: the rule needs no depth; CI time does
    draft = LookupDraft(vocab, max_ngram=2, min_confidence=0.0)
    draft.learn(random_texts(6, 12, vocab=vocab, seed=3))
    prompt = torch.tensor([1, 3, 2])
    sampling = SamplingConfig(temperature=1.0, top_k=3)
    exact = exact_two_token_distribution(target, prompt, sampling)
    engine = SpeculativeEngine(target, draft)
    pairs, drafted, accepted = [], 0, 0
    for seed in range(600):
        tokens, stats = run_spec(engine, prompt, GenerationConfig(max_new_tokens=3, k=2, sampling=sampling, seed=seed))
        pairs.append(tokens[0] * vocab + tokens[1])
        drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
    assert 0.1 < accepted / drafted < 0.95, accepted / drafted  # the accept and the residual paths both ran
    assert chi2_p_value(torch.tensor(pairs), exact) > PASS_P_VALUE


def test_a_second_identical_request_accepts_more_and_a_static_draft_does_not() -> None:
    prompt = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    for learner, better in (("count", True), ("static", False)):
        engine, online = session(LookupDraft(VOCAB), learner=learner)
        _, first = run_spec(engine, prompt, GEN)
        online.after_request(first)
        tokens, second = run_spec(engine, prompt, GEN)
        online.after_request(second)
        assert tokens == run_ar(engine.target, prompt, GEN)[0]
        assert (second.accepted > first.accepted + 10 and second.tau > 1.5 * first.tau) is better
    record = online.status().last_record
    assert online.status().learner == "static" and "index_entries" not in record


def test_the_index_learns_as_each_request_ends_and_the_round_record_sums_its_updates() -> None:
    """index_every = 1 (the default): within a round of 3 requests the index holds a request's text as soon as it
    ends, so the same request again drafts from it in the same round; the round record sums the three updates and
    their time is on the clock. index_every = 0 learns nothing until the boundary; both end in the same index."""
    prompt = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    taus, indexes = {}, {}
    for every in (1, 0):
        engine, online = session(LookupDraft(VOCAB), round_requests=3, index_every=every)
        for request in range(3):
            tokens, stats = run_spec(engine, prompt, GEN)
            assert tokens == run_ar(engine.target, prompt, GEN)[0]
            taus.setdefault(every, []).append(stats.tau)
            record = online.after_request(stats)
            learned = online.status().draft_memory["entries"]
            assert (learned > 0) is (every == 1 or request == 2)  # 0: learned at the boundary only
        assert record["index_updates"] == (3 if every else 1) and record["update_blocking_s"] >= record["update_s"] > 0
        assert record["index_learned_tokens"] == record["positions"] == 3 * (8 + 40 - 1)
        indexes[every] = engine.draft.state_tensors()
    assert taus[1][1] > 1.5 * taus[0][1] and taus[0][0] == taus[0][1] == taus[0][2] == taus[1][0]
    for name, tensor in indexes[1].items():
        assert torch.equal(tensor, indexes[0][name]), name
    with pytest.raises(UserError, match="index_every must be >= 0"):
        OnlineConfig(index_every=-1)


def test_status_and_round_records_report_the_index_memory() -> None:
    engine, online = session(LookupDraft(VOCAB), learner="ogd")  # any learner but static counts
    status = online.status()
    assert status.learner == "count" and status.draft_memory == {
        "entries": 0,
        "contexts": 0,
        "bytes": 0,
        "max_entries": 200_000,
    }
    _, stats = run_spec(engine, torch.tensor([1, 2, 3]), GEN)
    record = online.after_request(stats)
    memory = online.status().draft_memory
    assert record["index_entries"] == memory["entries"] > 0 and record["index_bytes"] == memory["bytes"] > 0
    # all but the last one or two tokens (the last verify step's choice, a final plain step): no record shows them
    assert record["positions"] == record["index_learned_tokens"] >= 3 + 40 - 2


@settings(max_examples=25, deadline=None)
@given(
    texts=st.lists(st.lists(st.integers(0, 30), min_size=0, max_size=60), min_size=1, max_size=20),
    cap=st.integers(1, 200),
)
def test_the_cap_holds_and_the_most_recently_learned_contexts_survive(texts: list[list[int]], cap: int) -> None:
    index = NgramIndex(1, 3, max_entries=cap)
    for text in texts:
        index.add(text)
        assert index.entries <= cap
        held = index.state_tensors()
        assert index.entries == held["next_ids"].shape[0] and len(index) == held["contexts"].shape[0]
    # The last text's contexts were learned last, so every other context goes first; one of them can go only when
    # they alone hold more than `cap` entries. They hold at most what they hold in an unbounded index (entries from
    # earlier texts included: a bound of 3 per token is not one).
    last, unbounded = texts[-1], NgramIndex(1, 3)
    for text in texts:
        unbounded.add(text)
    touched = {tuple(last[j - n : j]) for j in range(1, len(last)) for n in range(1, min(3, j) + 1)}
    if sum(len(unbounded.get(c)) for c in touched) <= cap:
        for j in range(1, len(last)):
            for n in range(1, min(3, j) + 1):
                assert last[j] in index.get(tuple(last[j - n : j]))


def test_many_requests_through_the_session_stay_within_the_cap() -> None:
    engine, online = session(LookupDraft(VOCAB, max_entries=300))
    for prompt in random_texts(12, 8, seed=4):
        _, stats = run_spec(engine, prompt, GenerationConfig(max_new_tokens=24, k=3))
        record = online.after_request(stats)
        assert record["index_entries"] <= 300
    assert record["index_evicted"] > 0 and online.status().draft_memory["entries"] <= 300


def test_the_byte_estimate_is_near_what_python_allocates() -> None:
    texts = [t.tolist() for t in random_texts(40, 300, vocab=49152, seed=5)]
    tracemalloc.start()
    try:
        index = NgramIndex(1, 4)
        before, _ = tracemalloc.get_traced_memory()
        for text in texts:
            index.add(list(text))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0.7 < (after - before) / index.nbytes < 1.3, (after - before, index.nbytes)


def learned_draft(texts: list[torch.Tensor], **kwargs) -> LookupDraft:
    draft = LookupDraft(VOCAB, **kwargs)
    draft.learn(texts)
    return draft


def test_save_and_restore_give_the_same_index_and_the_same_decoding(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    engine, online = session(LookupDraft(VOCAB, max_entries=500), state_dir=state)
    for prompt in random_texts(6, 8, seed=6):
        _, stats = run_spec(engine, prompt, GEN)
        online.after_request(stats)
    online.close()
    saved = engine.draft.state_tensors()
    restored_engine, restored = session(LookupDraft(VOCAB, max_entries=500), state_dir=state)
    assert restored.status().round == 6 and restored.status().draft_memory == online.status().draft_memory
    for name, tensor in restored_engine.draft.state_tensors().items():
        assert torch.equal(tensor, saved[name]), name  # eviction order included
    prompt = random_texts(6, 8, seed=6)[2]
    assert run_spec(restored_engine, prompt, GEN)[1].accepted == run_spec(engine, prompt, GEN)[1].accepted
    smaller_engine, _ = session(LookupDraft(VOCAB, max_entries=100), state_dir=state)  # a lower cap: evicted
    kept = smaller_engine.draft.state_tensors()
    assert smaller_engine.draft.memory()["entries"] <= 100
    assert torch.equal(kept["contexts"], saved["contexts"][-kept["contexts"].shape[0] :])  # the newest contexts


class Vocab:
    def __init__(self, words: list[str]) -> None:
        self.vocab = {w: i for i, w in enumerate(words)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)


@pytest.mark.parametrize(
    ("draft", "message"),
    [
        (lambda: LookupDraft(VOCAB + 1), "vocabulary size 96, this draft has 97"),
        (lambda: LookupDraft(VOCAB, max_ngram=3), "longest n-gram 4, this draft has 3"),
        (lambda: LookupDraft(VOCAB, tokenizer=Vocab(["a", "b"])), "tokenizer"),
    ],
)
def test_a_mismatched_state_is_refused_and_the_live_index_kept(tmp_path: Path, draft, message: str) -> None:
    engine, online = session(learned_draft(random_texts(3, 10)), state_dir=str(tmp_path))
    online.close()
    other = draft()
    other.learn(random_texts(1, 5, seed=9))
    before = other.state_tensors()
    with pytest.raises(UserError, match=re.escape(f"cannot use the draft state in '{tmp_path}'") + ".*" + message):
        session(other, state_dir=str(tmp_path))
    assert all(torch.equal(t, before[n]) for n, t in other.state_tensors().items())


def bad_snapshot(directory: Path, tensors: dict[str, torch.Tensor], draft: LookupDraft) -> None:
    info = {"round": 1, "draft": "lookup", "config": {}, "counting": draft.describe()}
    save_state(directory, tensors, {}, info)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: {**t, "next_ids": t["next_ids"] + 1000}, "outside the vocabulary"),
        (lambda t: {**t, "counts": -t["counts"]}, "count must be >= 1"),
        (lambda t: {**t, "contexts": t["contexts"][:, :2]}, r"contexts must be \[C, 4\]"),
        (lambda t: {k: v for k, v in t.items() if k != "offsets"}, "expected tensors"),
        (lambda t: {**t, "offsets": t["offsets"].flip(0)}, "offsets must rise"),
    ],
)
def test_bad_tensors_with_a_good_checksum_are_refused(tmp_path: Path, change, message: str) -> None:
    draft = learned_draft(random_texts(3, 10))
    bad_snapshot(tmp_path, change(draft.state_tensors()), draft)
    with pytest.raises(UserError, match=message):
        session(LookupDraft(VOCAB), state_dir=str(tmp_path))


def test_a_gradient_drafts_state_and_a_corrupt_file_are_refused(tmp_path: Path) -> None:
    target = tiny_llama()
    gradient = OnlineLearning(
        SpeculativeEngine(target, damaged_draft(target)),
        OnlineConfig(learner="ogd", state_dir=str(tmp_path / "eagle")),
    )
    gradient.close()
    with pytest.raises(UserError, match="saved for draft 'damaged', which does not learn by counting"):
        session(LookupDraft(VOCAB), state_dir=str(tmp_path / "eagle"))
    _, online = session(learned_draft(random_texts(3, 10)), state_dir=str(tmp_path / "lookup"))
    online.close()
    snapshot = next((tmp_path / "lookup").glob("state-*"))
    data = bytearray((snapshot / "draft.safetensors").read_bytes())
    data[-8:] = b"garbage!"
    (snapshot / "draft.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="every snapshot failed its checksum"):
        session(LookupDraft(VOCAB), state_dir=str(tmp_path / "lookup"))


def test_a_private_request_through_the_pipeline_leaves_the_index_unchanged(tmp_path: Path) -> None:
    from onlinespec.pipeline import Pipeline

    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "big", "red", "house"]
    save_tiny_model_dir(tmp_path / "m", words)
    pipe = Pipeline.load(str(tmp_path / "m"), draft="lookup")
    online = pipe.enable_learning(OnlineConfig(learner="count", round_requests=1, schedule="overlap"))
    assert isinstance(online, CountingLearning) and online.status().learner == "count"
    ids, cfg = torch.tensor([3, 4, 5, 3, 4]), GenerationConfig(max_new_tokens=16, k=3)
    pipe.start(ids, cfg).result()
    before = pipe.draft.state_tensors()
    private = pipe.start(torch.tensor([9, 10, 11, 12]), cfg, learn=False)
    private.result()
    assert private.finish() is None and online.status().round == 1
    assert all(torch.equal(t, before[n]) for n, t in pipe.draft.state_tensors().items())
    pipe.start(torch.tensor([9, 10, 11, 12]), cfg).result()
    assert online.status().round == 2 and pipe.draft.memory()["entries"] > before["next_ids"].shape[0]


def test_the_spec_forms_and_a_bad_one() -> None:
    assert [parse_draft_spec(s).argument for s in ("lookup", "lookup:3", "lookup:3:1000")] == ["", "3", "3:1000"]
    with pytest.raises(UserError, match="bad draft spec 'lookup:0': write lookup, lookup:N or lookup:N:E"):
        parse_draft_spec("lookup:0")


def test_generate_keeps_the_index_across_calls_and_reports_it(tmp_path: Path) -> None:
    """`onlinespec generate --draft lookup --learner count --draft-state DIR`, twice with the same prompt."""
    from test_cli import onlinespec

    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "a", "mat", "dog", "ran"])
    common = ["generate", "the cat sat on a mat", "--target", str(tmp_path / "m"), "--draft", "lookup", "--k", "4"]
    common += ["--max-new-tokens", "24", "--learner", "count", "--draft-state", str(tmp_path / "state")]
    first, second = onlinespec(*common, "--json"), onlinespec(*common)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    payload = json.loads(first.stdout)
    learning = payload["learning"]
    assert learning["learner"] == "count" and learning["round"] == 1 and learning["index_entries"] > 0
    assert "[count] round 2: index " in second.stderr and "Traceback" not in second.stderr
    # the second call drafts from the first call's answer
    assert float(re.search(r"tau ([\d.]+)", second.stderr).group(1)) > payload["stats"]["tau"]
