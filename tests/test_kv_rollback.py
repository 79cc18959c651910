"""After many accept/reject steps both KV caches must equal a fresh prefill of the committed text."""

from __future__ import annotations

import torch
from conftest import draft_of, noisy_copy, tiny_llama

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.kv_cache import new_cache, rollback
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.drafts.layerskip import build_layerskip_model


def fresh_prefill(model, ids: torch.Tensor):
    cache = new_cache(model)
    with torch.no_grad():
        model(input_ids=ids[None], past_key_values=cache, use_cache=True)
    return cache


def assert_same_cache(cache, reference) -> None:
    assert cache.get_seq_length() == reference.get_seq_length()
    for layer, ref in zip(cache.layers, reference.layers, strict=True):
        torch.testing.assert_close(layer.keys, ref.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(layer.values, ref.values, atol=1e-5, rtol=1e-4)


def check_caches_through_a_request(target, draft_model, sampling: SamplingConfig) -> RequestStats:
    engine = SpeculativeEngine(target, draft_of(draft_model, 96))
    prompt = torch.tensor([5, 17, 33, 2, 71, 8])
    cfg = GenerationConfig(max_new_tokens=48, k=4, sampling=sampling, seed=3)
    stop, stats = StopCriteria(cfg.max_new_tokens, frozenset()), RequestStats()
    for step, _ in enumerate(engine.stream(prompt, cfg, stop, stats)):
        committed = torch.cat([prompt, torch.tensor(stop.token_ids)])
        # The target holds every committed token except the newest (its logits are computed next step).
        assert_same_cache(engine.target_cache, fresh_prefill(target, committed[:-1]))
        if step > 0:  # the draft holds a prefix of the committed tokens it has already seen
            draft = engine.draft
            assert draft.cached_len <= committed.shape[0]
            assert_same_cache(draft.cache, fresh_prefill(draft_model, committed[: draft.cached_len]))
    return stats


def test_caches_match_fresh_prefill_greedy() -> None:
    target = tiny_llama(seed=21)
    stats = check_caches_through_a_request(target, noisy_copy(target, 0.3), SamplingConfig())
    assert 0 < stats.accepted < stats.drafted  # both accept and reject paths happened


def test_caches_match_fresh_prefill_sampling_with_layerskip_draft() -> None:
    target = tiny_llama(seed=22)
    stats = check_caches_through_a_request(target, build_layerskip_model(target, 2), SamplingConfig(temperature=1.0))
    assert 0 < stats.accepted < stats.drafted


def test_rollback_drops_exactly_the_tail() -> None:
    target = tiny_llama(seed=23)
    ids = torch.arange(20)
    cache = fresh_prefill(target, ids)
    rollback(cache, 12)
    assert_same_cache(cache, fresh_prefill(target, ids[:12]))
    rollback(cache, 15)  # asking for more than is cached changes nothing
    assert cache.get_seq_length() == 12
