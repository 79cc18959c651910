"""The engine's per-step feedback records carry exactly what verification computed."""

from __future__ import annotations

import torch
from conftest import draft_of, noisy_copy, run_spec, tiny_llama

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.sampling import SamplingConfig, probs_from_logits


def test_records_match_a_fresh_target_pass_and_the_stats() -> None:
    target = tiny_llama(seed=31)
    draft_model = noisy_copy(target, 0.3)
    engine = SpeculativeEngine(target, draft_of(draft_model, 96))
    records = []
    engine.add_listener(records.append)
    sampling = SamplingConfig(temperature=0.9, top_k=20)
    tokens, stats = run_spec(
        engine, torch.tensor([4, 8, 15, 16, 23]), GenerationConfig(max_new_tokens=40, k=3, sampling=sampling, seed=7)
    )
    assert len(records) == sum(stats.accept_hist)  # one record per verify step
    assert sum(r.num_accepted for r in records) == stats.accepted
    assert sum(r.draft_tokens.numel() for r in records) == stats.drafted
    for record in records:
        k = record.draft_tokens.numel()
        with torch.no_grad():
            full = target(record.context_ids[None]).logits[0]
            draft_full = draft_model(record.context_ids[None]).logits[0]
        verified = full[record.first_position : record.first_position + k + 1]
        torch.testing.assert_close(record.target_logits, verified, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(record.target_probs, probs_from_logits(verified, sampling), atol=1e-5, rtol=1e-4)
        drafted_at = draft_full[record.first_position : record.first_position + k]
        torch.testing.assert_close(record.draft_logits, drafted_at, atol=1e-4, rtol=1e-4)
        assert record.target_hidden_states is None  # this draft did not ask for them
    committed = torch.cat([records[-1].context_ids[: records[-1].first_position + 1]])
    assert committed.tolist()[5:] == tokens[: committed.numel() - 5]


def test_hidden_states_are_recorded_when_the_draft_asks() -> None:
    target = tiny_llama(seed=32)
    draft = draft_of(target, 96)
    draft.wants_target_hidden = True
    engine = SpeculativeEngine(target, draft)
    records = []
    engine.add_listener(records.append)
    run_spec(engine, torch.arange(6), GenerationConfig(max_new_tokens=12, k=2))
    hidden = records[0].target_hidden_states
    assert len(hidden) == target.config.num_hidden_layers + 1
    assert hidden[-1].shape == (3, target.config.hidden_size)


def test_hidden_states_are_computed_only_for_drafts_that_draft_from_them(monkeypatch) -> None:
    target = tiny_llama(seed=33)
    seen_flags = []
    original = target.forward

    def spy(*args, **kwargs):
        seen_flags.append(kwargs.get("output_hidden_states"))
        return original(*args, **kwargs)

    monkeypatch.setattr(target, "forward", spy)
    plain = SpeculativeEngine(target, draft_of(target, 96))
    plain.add_listener(lambda record: None)  # a listener alone does not ask for hidden states
    run_spec(plain, torch.arange(6), GenerationConfig(max_new_tokens=12, k=2))
    assert seen_flags and not any(seen_flags)

    seen_flags.clear()
    wanting = draft_of(target, 96)
    wanting.wants_target_hidden = True  # a feature-level draft needs them even when nobody listens
    run_spec(SpeculativeEngine(target, wanting), torch.arange(6), GenerationConfig(max_new_tokens=12, k=2))
    engine_calls = [flag for flag in seen_flags if flag is not None]  # None: the draft's own calls of the model
    assert engine_calls and all(engine_calls)
