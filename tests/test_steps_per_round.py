"""Issue 11.2-11.5: several steps per round (mini-batches, epochs, bounded replay), EAGLE trained as deep as it
drafted (unroll stored with the head), out-of-vocabulary positions masked, loss_after, resume of replay state."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import damaged_draft, feedback_record, run_spec, shifted_stream, tiny_llama

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.drafts.eagle import EagleDraft
from onlinespec.drafts.head_draft import head_example_terms
from onlinespec.drafts.head_store import save_head
from onlinespec.drafts.heads import build_head, load_head
from onlinespec.errors import UserError
from onlinespec.online.draft_objective import DraftObjective, training_copy
from onlinespec.online.feedback_buffer import FeedbackBuffer, RequestExamples
from onlinespec.online.learners import LearnerConfig, make_learner
from onlinespec.online.replay import ReplayBuffer, minibatches
from onlinespec.online.session import OnlineConfig, OnlineLearning

GEN = GenerationConfig(max_new_tokens=12, k=3)


def request(first: int, n: int) -> RequestExamples:
    """A request with positions first..first+n-1 (dummy targets): enough for the schedule and the buffer."""
    return RequestExamples(
        context_ids=torch.arange(first + n + 1),
        pred_index=list(range(first, first + n)),
        top_ids=[torch.tensor([i]) for i in range(n)],
        top_probs=[torch.tensor([1.0]) for _ in range(n)],
        tail=[0.0] * n,
    )


def test_minibatches_cut_each_epoch_in_order() -> None:
    e = [request(0, 1) for _ in range(5)]
    assert minibatches(e, 0, 1) == [e]
    steps = minibatches(e, 2, 2)
    assert [[id(x) for x in s] for s in steps] == [
        [id(x) for x in s] for s in [e[0:2], e[2:4], e[4:], e[0:2], e[2:4], e[4:]]
    ]
    assert minibatches([], 2, 3) == []
    with pytest.raises(UserError):
        minibatches(e, -1, 1)


def test_replay_keeps_the_newest_positions_within_its_bound() -> None:
    replay = ReplayBuffer(5)
    a1, a2, b1, c1 = request(0, 3), request(10, 2), request(20, 3), request(30, 4)
    replay.add([a1, a2])
    assert replay.examples() == [a1, a2] and replay.size == 5
    replay.add([b1])  # 8 > 5: the oldest request (3 positions) leaves
    assert replay.examples() == [a2, b1] and replay.size == 5
    replay.add([c1])  # 9 > 5: a2 leaves (2), then b1 loses its 2 oldest positions
    held = replay.examples()
    assert [r.pred_index for r in held] == [[22], [30, 31, 32, 33]] and replay.size == 5
    assert held[0].top_ids == b1.top_ids[2:] and held[0].context_ids is b1.context_ids
    assert replay.nbytes > 0
    again = ReplayBuffer(5)
    again.load_state_dict(replay.state_dict())
    assert [r.pred_index for r in again.examples()] == [[22], [30, 31, 32, 33]]
    off = ReplayBuffer(0)
    off.add([a1])
    assert off.examples() == [] and off.nbytes == 0


def _session(cfg: OnlineConfig, rounds: int, state_dir: str | None = None, skip: int = 0):
    """Decode `rounds` rounds of 2 requests with a damaged draft; a second FeedbackBuffer on the same engine
    captures each round's examples. Returns (session, records, examples per round, the draft's w_0 copy)."""
    target = tiny_llama(seed=0)
    draft = damaged_draft(target)
    initial = training_copy(draft.model, draft.trainable)
    engine = SpeculativeEngine(target, draft)
    online = OnlineLearning(engine, replace(cfg, state_dir=state_dir))
    capture = FeedbackBuffer(cfg.top_k, cfg.positions, cfg.max_positions)
    engine.add_listener(capture.add)
    records, rounds_examples = [], []
    for prompt in shifted_stream()[2 * skip : 2 * (skip + rounds)]:
        _, stats = run_spec(engine, prompt, GEN)
        record = online.after_request(stats)
        if record is not None:
            records.append(record)
            rounds_examples.append(capture.drain())
    return online, records, rounds_examples, draft, initial


CFG = OnlineConfig(
    learner="ogd",
    learner_cfg=LearnerConfig(lr=1e-2, step="adam"),
    round_requests=2,
    schedule="sync",
    batch_requests=1,
    epochs=2,
    replay_positions=10_000,
)


def test_each_step_sees_its_minibatch_and_replay_is_prequential() -> None:
    online, records, examples, draft, initial = _session(CFG, rounds=3)
    # By hand: the same learner over the same schedule, from w_0.
    objective = DraftObjective(draft, initial, CFG.loss)
    learner = make_learner("ogd", objective.parameters(), CFG.learner_cfg)
    replayed: list[RequestExamples] = []
    for record, own in zip(records, examples, strict=True):
        assert len(own) == 2
        train = replayed + own  # rounds < t, oldest first, then round t
        assert record["steps"] == 2 * len(train)
        assert record["loss"] == objective.loss_at(own, objective.parameters())
        for batch in [train[i : i + 1] for i in range(len(train))] * 2:  # batches of 1 request, 2 epochs
            learner.update(objective.grad_fn(batch))
        assert record["loss_after"] == objective.loss_at(own, objective.parameters())
        assert record["replay_positions"] == sum(len(e.pred_index) for e in train)
        replayed = train
    for mine, theirs in zip(online._objective.parameters(), objective.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert learner.round == online._learner.round == 2 * (2 + 4 + 6)


def test_defaults_take_one_step_and_report_loss_after() -> None:
    cfg = OnlineConfig(learner="ogd", learner_cfg=LearnerConfig(lr=1e-2), round_requests=2, schedule="sync")
    online, records, examples, draft, initial = _session(cfg, rounds=2)
    objective = DraftObjective(draft, initial, cfg.loss)
    learner = make_learner("ogd", objective.parameters(), cfg.learner_cfg)
    for record, own in zip(records, examples, strict=True):
        telemetry = learner.update(objective.grad_fn(own))
        assert record["steps"] == 1 and record["replay_positions"] == 0 and record["oov_rate"] == 0.0
        assert record["loss"] == telemetry["loss"] and record["update_norm_ratio"] == telemetry["update_norm_ratio"]
        assert record["loss_after"] == objective.loss_at(own, objective.parameters())


def test_resume_after_a_kill_continues_optimizer_and_replay_exactly(tmp_path) -> None:
    whole, whole_records, _, _, _ = _session(CFG, rounds=4)
    state = str(tmp_path / "state")
    _session(CFG, rounds=2, state_dir=state)  # "killed" after round 2: never closed, saved at each boundary
    resumed, records, _, _, _ = _session(CFG, rounds=2, state_dir=state, skip=2)
    assert [r["round"] for r in records] == [3, 4]
    keys = ("loss", "loss_after", "steps", "replay_positions", "tau")
    assert [{k: r[k] for k in keys} for r in records] == [{k: r[k] for k in keys} for r in whole_records[2:]]
    for mine, theirs in zip(resumed._objective.parameters(), whole._objective.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert json.dumps(resumed._learner.precond.state_dict()["step"]) == '"adam"'
    for a, b in zip(resumed._replay.examples(), whole._replay.examples(), strict=True):
        assert a.pred_index == b.pred_index and all(
            torch.equal(x, y) for x, y in zip(a.top_probs, b.top_probs, strict=True)
        )


def _eagle_example(target, head, length: int = 10) -> RequestExamples:
    """Teacher-forced features of a short sequence of `target` and 3 positions with one-hot targets."""
    ids = torch.arange(1, length + 1) % 90
    with torch.no_grad():
        out = target(ids[None], output_hidden_states=True)
    features = out.hidden_states[-1][0]
    rows = [5, 6, 7]
    return RequestExamples(
        context_ids=ids,
        pred_index=rows,
        top_ids=[torch.tensor([int(ids[j + 1]), 0]) for j in rows],
        top_probs=[torch.tensor([0.9, 0.1]) for _ in rows],
        tail=[0.0] * 3,
        features=features[: length - 1].clone(),
    )


def test_eagle_unroll_is_stored_and_online_terms_follow_the_drafted_k(tmp_path) -> None:
    target = tiny_llama(seed=3)
    head = build_head("eagle", target, unroll=3).eval()
    save_head(tmp_path / "head", head, target)
    assert json.loads((tmp_path / "head" / "config.json").read_text())["unroll"] == 3
    assert load_head(tmp_path / "head", target).unroll == 3
    ex = _eagle_example(target, head)

    def call(**kwargs):
        return head(**kwargs)

    assert [w for w, _, _ in head_example_terms(head, call, ex)] == [1.0, 0.8, 0.8**2]  # its own unroll
    ex.unroll = 2  # the request drafted 2 tokens a step
    terms = head_example_terms(head, call, ex)
    assert [w for w, _, _ in terms] == [1.0, 0.8]
    assert torch.equal(terms[1][1], head(ex.features[None, :7], ex.context_ids[None, 1:8], unroll=2)[1][0, [4, 5, 6]])


def test_feedback_records_the_drafted_k_and_a_fixed_unroll_overrides_it() -> None:
    target = tiny_llama(seed=3)
    draft = EagleDraft(build_head("eagle", target).eval(), "eagle")
    engine = SpeculativeEngine(target, draft)
    buffer = FeedbackBuffer()
    engine.add_listener(buffer.add)
    run_spec(engine, torch.arange(1, 7), GenerationConfig(max_new_tokens=8, k=3))
    (ex,) = buffer.drain()
    assert ex.unroll == 3
    model = training_copy(draft.model, draft.trainable)
    params = DraftObjective(draft, model).parameters()
    as_drafted = DraftObjective(draft, model).loss_at([ex], params)
    ex.unroll = 1
    assert DraftObjective(draft, model, unroll=3).loss_at([ex], params) == as_drafted


def test_a_bf16_draft_learns_on_float32_master_weights() -> None:
    target = tiny_llama(seed=3).to(torch.bfloat16)
    draft = EagleDraft(build_head("eagle", target).eval(), "eagle")
    live = dict(draft.model.named_parameters())
    assert {live[n].dtype for n in draft.trainable} == {torch.bfloat16}
    objective = DraftObjective(draft, training_copy(draft.model, draft.trainable))
    masters = objective.parameters()
    assert {p.dtype for p in masters} == {torch.float32}
    assert all(torch.equal(m, live[n].float()) for n, m in zip(draft.trainable, masters, strict=True))
    ex = _eagle_example(target, draft.model)  # bf16 features, as a bf16 target stores them
    loss, grads = objective.grad_fn([ex])(masters)
    assert loss > 0 and {g.dtype for g in grads} == {torch.float32} and sum(g.norm() for g in grads) > 0
    # five OGD steps of lr 1e-4 on the norm-1 clipped gradient: each coordinate moves far less than a bf16 spacing
    learner = make_learner("ogd", masters, LearnerConfig(lr=1e-4))
    before = [m.clone() for m in masters]
    for _ in range(5):
        learner.update(objective.grad_fn([ex]))
    moved = [m != b for m, b in zip(masters, before, strict=True)]
    assert sum(int(x.sum()) for x in moved) > 0.5 * sum(x.numel() for x in moved)  # the masters kept the steps
    rounded_away = [b.bfloat16() == m.bfloat16() for m, b in zip(masters, before, strict=True)]
    assert sum(int(x.sum()) for x in rounded_away) > 0.5 * sum(x.numel() for x in rounded_away)  # bf16 alone: lost


def test_a_position_whose_target_top1_is_outside_the_vocabulary_contributes_nothing() -> None:
    target = tiny_llama(seed=3)
    vocab = torch.arange(0, 96, 2)  # even ids only
    draft = EagleDraft(build_head("eagle", target, vocab).eval(), "eagle")
    ex = _eagle_example(target, draft.model)
    ex.top_ids = [torch.tensor([4, 1]), torch.tensor([7, 2]), torch.tensor([8, 6])]  # position 1: top-1 is odd
    only_in_vocab = RequestExamples(
        context_ids=ex.context_ids,
        pred_index=[ex.pred_index[0], ex.pred_index[2]],
        top_ids=[ex.top_ids[0], ex.top_ids[2]],
        top_probs=[ex.top_probs[0], ex.top_probs[2]],
        tail=[0.0, 0.0],
        features=ex.features,
    )
    model = training_copy(draft.model, draft.trainable)
    masked = DraftObjective(draft, model)
    params = masked.parameters()
    assert masked.oov_rate([ex]) == pytest.approx(1 / 3)
    assert masked.loss_at([ex], params) == masked.loss_at([only_in_vocab], params)
    loss, grads = masked.grad_fn([ex])(params)
    loss2, grads2 = masked.grad_fn([only_in_vocab])(params)
    assert loss == loss2 and all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))
    assert DraftObjective(draft, model, mask_oov=False).loss_at([ex], params) != masked.loss_at([ex], params)


def test_metrics_show_the_round_gauges_and_expert_losses() -> None:
    from onlinespec.serve.metrics import ServerMetrics

    metrics = ServerMetrics("ensemble")
    record = {"round": 1, "loss": 2.5, "loss_after": 2.0, "oov_rate": 0.25, "update_norm_ratio": 1e-3}
    metrics.observe_round({**record, "weights": [0.5, 0.5], "expert_losses": [2.4, 2.6]})
    text = metrics.render(queue_depth=0, in_flight=0, draft_round=1).decode()
    for line in (
        "onlinespec_learner_loss 2.5",
        "onlinespec_learner_loss_after 2.0",
        "onlinespec_learner_oov_rate 0.25",
        "onlinespec_learner_update_norm_ratio 0.001",
        'onlinespec_learner_expert_loss{expert="1"} 2.6',
    ):
        assert line in text.splitlines()


def test_a_hybrids_head_unrolls_as_deep_as_it_drafted_not_as_deep_as_the_lookup_ran() -> None:
    """The buffer's unroll is the longest chain of the trained part: a hybrid's lookup steps (source request or
    shared, up to k = 7 tokens) teach the head at their positions but do not deepen its unrolled passes."""
    from onlinespec.online.feedback_buffer import FeedbackBuffer

    vocab = 16
    buffer = FeedbackBuffer(top_k=4)
    for k, source in ((6, "request"), (2, "head"), (7, "shared"), (1, "head")):
        buffer.add(feedback_record(0, k, 0, vocab, source))
    (examples,) = buffer.drain()
    assert examples.unroll == 2 and len(examples.pred_index) == 4  # every step's first position still trains
    single = FeedbackBuffer(top_k=4)
    single.add(feedback_record(0, 5, 0, vocab))  # a draft with one source: as drafted
    assert single.drain()[0].unroll == 5
