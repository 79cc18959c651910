"""Learning from prompt positions (online/prompt_feedback.py): p read off the target's prefill features equals the
target's own distribution, the right positions are added, and a session trains on them."""

from __future__ import annotations

import pytest
import torch
from conftest import damaged_draft, run_spec, tiny_llama

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.drafts.eagle import EagleDraft
from onlinespec.drafts.heads import build_head
from onlinespec.errors import UserError
from onlinespec.online.draft_objective import DraftObjective, training_copy
from onlinespec.online.feedback_buffer import FeedbackBuffer
from onlinespec.online.learners import LearnerConfig, make_learner
from onlinespec.online.prompt_feedback import with_prompt_positions
from onlinespec.online.session import OnlineConfig, OnlineLearning

GEN = GenerationConfig(max_new_tokens=8, k=2)


def _eagle_round(prompt_len: int = 10):
    """One request decoded by an EAGLE draft on a tiny target; returns (target, draft, the request's examples)."""
    target = tiny_llama(seed=0)
    draft = EagleDraft(build_head("eagle", target).eval(), "eagle")
    engine = SpeculativeEngine(target, draft)
    buffer = FeedbackBuffer(top_k=0)
    engine.add_listener(buffer.add)
    prompt = torch.arange(3, 3 + prompt_len)
    run_spec(engine, prompt, GEN)
    return target, draft, prompt, buffer.drain()


def test_prompt_distributions_equal_the_targets_own() -> None:
    target, draft, prompt, examples = _eagle_round()
    (ex,) = examples
    assert min(ex.pred_index) == prompt.numel()  # verify steps start after the prefill's positions 0..T-1
    out, added = with_prompt_positions(examples, draft, count=4, top_k=0)
    assert added == 4
    rows = out[0].pred_index[:4]
    assert rows == [6, 7, 8, 9]  # the prefill's last 4 positions, each predicting the token after it
    with torch.no_grad():
        want = target(input_ids=prompt[None]).logits[0].float().softmax(-1)  # [T, V]
    for r, probs, ids in zip(rows, out[0].top_probs[:4], out[0].top_ids[:4], strict=True):
        assert torch.equal(ids, torch.arange(want.shape[-1]))
        torch.testing.assert_close(probs, want[r], atol=1e-5, rtol=1e-4)
    assert out[0].pred_index[4:] == ex.pred_index and out[0].tail[:4] == pytest.approx([0.0] * 4, abs=1e-5)


def test_count_is_capped_by_the_prompt_and_zero_adds_nothing() -> None:
    _, draft, prompt, examples = _eagle_round(prompt_len=5)
    out, added = with_prompt_positions(examples, draft, count=100, top_k=3)
    assert added == prompt.numel() and out[0].pred_index[:added] == list(range(added))
    assert all(t.numel() == 3 for t in out[0].top_ids[:added])
    assert with_prompt_positions(examples, draft, count=0, top_k=3) == (examples, 0)


def test_a_session_trains_on_prompt_positions_exactly() -> None:
    """One sync round with prompt_positions: the published weights equal one learner update, by hand, on the
    round's verified positions plus its last 6 prompt positions."""
    target = tiny_llama(seed=0)
    draft = EagleDraft(build_head("eagle", target).eval(), "eagle")
    initial = training_copy(draft.model, draft.trainable)
    engine = SpeculativeEngine(target, draft)
    cfg = OnlineConfig(learner_cfg=LearnerConfig(lr=0.5), round_requests=1, schedule="sync", prompt_positions=6)
    online = OnlineLearning(engine, cfg)
    capture = FeedbackBuffer(cfg.top_k, cfg.positions, cfg.max_positions)
    engine.add_listener(capture.add)
    _, stats = run_spec(engine, torch.arange(3, 15), GEN)
    record = online.after_request(stats)
    examples = capture.drain()
    assert record["prompt_positions"] == 6 and record["positions"] == len(examples[0].pred_index)
    objective = DraftObjective(draft, initial, cfg.loss)
    learner = make_learner("ogd", objective.parameters(), cfg.learner_cfg)
    learner.update(objective.grad_fn(with_prompt_positions(examples, draft, 6, cfg.top_k)[0]))
    live = dict(draft.model.named_parameters())
    for name, value in zip(objective.names, objective.parameters(), strict=True):
        torch.testing.assert_close(live[name].detach(), value.detach())
    verified_only = DraftObjective(draft, training_copy(initial, draft.trainable), cfg.loss)
    make_learner("ogd", verified_only.parameters(), cfg.learner_cfg).update(verified_only.grad_fn(examples))
    assert any(not torch.equal(a, b) for a, b in zip(verified_only.parameters(), objective.parameters(), strict=True))


def test_prompt_positions_need_a_feature_draft() -> None:
    target = tiny_llama(seed=0)
    with pytest.raises(UserError, match="prompt_positions"):
        OnlineLearning(SpeculativeEngine(target, damaged_draft(target)), OnlineConfig(prompt_positions=4))
    with pytest.raises(UserError, match="prompt_positions"):
        OnlineConfig(prompt_positions=-1)
