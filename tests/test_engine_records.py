"""The engine's bookkeeping checked against a fresh target pass: request and step numbers, positions, the
committed features a feature-level draft is given, and tree steps reported as the accepted path plus the first
rejected child (mutation testing found these unchecked, docs/testing.md)."""

from __future__ import annotations

import pytest
import torch
from conftest import draft_of, noisy_copy, run_spec, tiny_llama

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.tree import TreeConfig
from onlinespec.drafts.heads import make_head_draft
from onlinespec.errors import UserError

VOCAB = 96


@torch.no_grad()
def fresh_pass(target, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [L] -> (logits [L, V], last-layer features [L, d]) of one uncached target forward."""
    out = target(input_ids=ids[None], output_hidden_states=True)
    return out.logits[0], out.hidden_states[-1][0]


def check_record(target, record) -> None:
    """Every field of one record against a fresh target pass over its context."""
    start, n, k = record.first_position, record.num_accepted, record.draft_tokens.numel()
    assert torch.equal(record.context_ids[start + 1 :], record.draft_tokens)
    logits, features = fresh_pass(target, record.context_ids)
    torch.testing.assert_close(record.target_logits, logits[start : start + k + 1][: record.target_logits.shape[0]])
    choice = record.target_logits.argmax(dim=-1)
    assert torch.equal(record.draft_tokens[:n], choice[:n])  # the accepted drafts are the target's greedy tokens
    if n < k:
        assert record.draft_tokens[n] != choice[n]  # and the first one after them is not
    torch.testing.assert_close(record.context_features, features[: start + 1 + n], atol=1e-5, rtol=1e-4)


def test_chain_records_number_requests_and_steps_and_carry_the_committed_features() -> None:
    target = tiny_llama(seed=51)
    draft = draft_of(noisy_copy(target, 0.3), VOCAB)
    draft.wants_target_hidden = True  # the engine keeps the target's features of committed positions
    engine = SpeculativeEngine(target, draft)
    records = []
    engine.add_listener(records.append)
    prompts = [torch.arange(5), torch.tensor([9, 8, 7, 6, 5, 4, 3])]
    outputs = [run_spec(engine, prompt, GenerationConfig(max_new_tokens=16, k=3))[0] for prompt in prompts]
    for request_id, (prompt, tokens) in enumerate(zip(prompts, outputs, strict=True), start=1):
        mine = [r for r in records if r.request_id == request_id]
        assert [r.step for r in mine] == list(range(len(mine)))
        emitted = tokens[:1]  # the prefill's token; each step adds its accepted drafts and the target's next one
        for record in mine:
            assert record.first_position == prompt.numel() + len(emitted) - 1
            assert record.context_ids[: record.first_position + 1].tolist() == prompt.tolist() + emitted
            check_record(target, record)
            n = record.num_accepted
            emitted = emitted + record.draft_tokens[:n].tolist() + [int(record.target_logits[n].argmax())]
        assert emitted == tokens[: len(emitted)] and len(tokens) - len(emitted) <= 1  # (+ a last plain step)
    assert {r.request_id for r in records} == {1, 2}


def test_tree_records_are_the_accepted_path_and_the_first_rejected_child(tiny_target) -> None:
    engine = SpeculativeEngine(tiny_target, make_head_draft("medusa:fresh", tiny_target, "tiny"))
    records = []
    engine.add_listener(records.append)
    _, stats = run_spec(engine, torch.arange(3, 9), GenerationConfig(max_new_tokens=20, tree=TreeConfig("static")))
    assert len(records) == sum(stats.accept_hist) and sum(r.num_accepted for r in records) == stats.accepted
    for record in records:
        assert record.target_probs is None and record.draft_probs is None
        check_record(tiny_target, record)
    accepted = [r.num_accepted for r in records]
    assert 0 in accepted and max(accepted) >= 2  # steps that accepted nothing, and paths two nodes deep


def test_a_chain_only_draft_with_a_tree_is_a_user_error(tiny_target) -> None:
    engine = SpeculativeEngine(tiny_target, draft_of(tiny_target, VOCAB))
    assert (engine.target_cache, engine.features) == (None, None)  # no request yet: no cache, no features
    with pytest.raises(UserError, match="draft 'test-draft' drafts chains only: use --tree chain"):
        run_spec(engine, torch.arange(4), GenerationConfig(max_new_tokens=4, tree=TreeConfig("static")))
