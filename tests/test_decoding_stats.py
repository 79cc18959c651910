"""What a request's RequestStats say, counted by hand: tokens, target forwards, drafts, and times that exclude
the caller's time between yields (mutation testing found these unchecked, docs/testing.md)."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from conftest import draft_of, noisy_copy, run_ar, run_spec, tiny_llama

from onlinespec.decoding.autoregressive import autoregressive_stream
from onlinespec.decoding.config import DEFAULT_K, SEED_RANGE, GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.decoding.tree import TreeConfig
from onlinespec.drafts.heads import make_head_draft
from onlinespec.errors import UserError

PAUSE_S = 0.02  # the caller's time between two yields, which no stats time may include


def consume_slowly(stream) -> tuple[int, float]:
    """Drain `stream`, pausing after each yield -> (yields, wall-clock seconds of the whole loop)."""
    tic = time.perf_counter()
    yields = 0
    for _ in stream:
        yields += 1
        time.sleep(PAUSE_S)
    return yields, time.perf_counter() - tic


def test_autoregressive_stats_count_one_forward_per_token_and_only_their_own_time() -> None:
    target = tiny_llama(seed=41)
    cfg = GenerationConfig(max_new_tokens=6)
    stop, stats = StopCriteria(cfg.max_new_tokens, frozenset()), RequestStats()
    yields, elapsed = consume_slowly(autoregressive_stream(target, torch.arange(7), cfg, stop, stats))
    assert (stats.prompt_tokens, stats.new_tokens, stats.target_forwards, yields) == (7, 6, 6, 6)
    assert stats.target_s == stats.wall_s  # every forward is the target's
    assert 0 < stats.wall_s < elapsed - yields * PAUSE_S


def test_speculative_stats_count_forwards_drafts_and_only_their_own_time() -> None:
    target = tiny_llama(seed=42)
    engine = SpeculativeEngine(target, draft_of(target, 96))  # the draft is the target: every draft is accepted
    cfg = GenerationConfig(max_new_tokens=13, k=3)
    stop, stats = StopCriteria(cfg.max_new_tokens, frozenset()), RequestStats()
    yields, elapsed = consume_slowly(engine.stream(torch.arange(5), cfg, stop, stats))
    # prefill emits 1 token, then 3 steps of 3 accepted drafts + 1 bonus: 1 + 4 + 4 + 4 = 13
    assert (stats.prompt_tokens, stats.new_tokens, stats.target_forwards, yields) == (5, 13, 4, 4)
    assert (stats.drafted, stats.accepted, stats.accept_hist) == (9, 9, [0, 0, 0, 3])
    assert stats.draft_s > 0 and stats.target_s > 0
    assert stats.draft_s + stats.target_s < stats.wall_s < elapsed - yields * PAUSE_S


def slowed(fn, seconds: float):
    """`fn` that first sleeps `seconds`: the time a stats field must attribute to it is known from below."""

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return fn(*args, **kwargs)

    return slow


TARGET_S, DRAFT_S = 0.03, 0.02  # added to every target forward and every drafting call


@pytest.mark.parametrize("tree", ["chain", "static"])
def test_every_target_forward_and_drafting_call_is_timed_where_it_belongs(tiny_target, tree: str) -> None:
    """Each target forward adds at least TARGET_S to target_s, each proposal at least DRAFT_S to draft_s."""
    draft = make_head_draft("medusa:fresh", tiny_target, "tiny")
    draft.propose, draft.propose_tree = slowed(draft.propose, DRAFT_S), slowed(draft.propose_tree, DRAFT_S)
    engine = SpeculativeEngine(tiny_target, draft)
    engine.target = copy.copy(tiny_target)  # a shallow copy whose forward alone is slowed (the heads use the target)
    engine.target.forward = slowed(tiny_target.forward, TARGET_S)
    cfg = GenerationConfig(max_new_tokens=12, k=3, tree=TreeConfig(tree))
    stop, stats = StopCriteria(cfg.max_new_tokens, frozenset()), RequestStats()
    consume_slowly(engine.stream(torch.arange(5), cfg, stop, stats))
    steps = sum(stats.accept_hist)  # drafting calls
    plain = stats.target_forwards - 1 - steps  # a last step with no room to draft
    assert plain in (0, 1) and stats.new_tokens == 1 + steps + stats.accepted + plain == 12
    assert stats.target_s >= TARGET_S * stats.target_forwards and stats.draft_s >= DRAFT_S * steps
    assert stats.draft_s + stats.target_s < stats.wall_s


def test_a_last_step_with_no_room_to_draft_is_one_plain_target_forward() -> None:
    target = tiny_llama(seed=45)
    engine = SpeculativeEngine(target, draft_of(target, 96))  # every draft accepted
    stop, stats = StopCriteria(7, frozenset()), RequestStats()
    yields, _ = consume_slowly(engine.stream(torch.arange(5), GenerationConfig(max_new_tokens=7, k=4), stop, stats))
    # prefill 1 token, one step of 4 drafts + bonus = 6, then 1 left: a plain forward, nothing drafted
    counts = (stats.new_tokens, stats.target_forwards, stats.drafted, stats.accept_hist, yields)
    assert counts == (7, 3, 4, [0, 0, 0, 0, 1], 3)


def test_a_prefill_only_request_counts_its_one_forward_as_target_time() -> None:
    target = tiny_llama(seed=43)
    engine = SpeculativeEngine(target, draft_of(target, 96))
    stop, stats = StopCriteria(1, frozenset()), RequestStats()
    yields, elapsed = consume_slowly(engine.stream(torch.arange(5), GenerationConfig(max_new_tokens=1), stop, stats))
    assert (stats.new_tokens, stats.target_forwards, stats.drafted, stats.draft_s, yields) == (1, 1, 0, 0.0, 1)
    assert 0 < stats.target_s < stats.wall_s < elapsed - PAUSE_S


def test_a_seed_makes_sampling_repeatable_and_another_seed_changes_it() -> None:
    target = tiny_llama(seed=44)
    engine = SpeculativeEngine(target, draft_of(noisy_copy(target, 0.5), 96))
    sampling = SamplingConfig(temperature=1.0)

    def sampled(seed: int) -> tuple[list[int], list[int]]:
        cfg = GenerationConfig(max_new_tokens=24, k=3, sampling=sampling, seed=seed)
        return run_ar(target, torch.arange(5), cfg)[0], run_spec(engine, torch.arange(5), cfg)[0]

    assert sampled(5) == sampled(5) and sampled(5) != sampled(6)


def test_generation_defaults_and_the_seed_range() -> None:
    cfg = GenerationConfig()
    assert (cfg.max_new_tokens, cfg.k, cfg.seed, cfg.stop, DEFAULT_K) == (128, None, 0, (), 2)  # k: the draft's
    assert SEED_RANGE == (-(2**63), 2**64 - 1)
    for seed in SEED_RANGE:
        assert GenerationConfig(seed=seed).generator() is None  # accepted (greedy: no generator)
    for seed in (SEED_RANGE[0] - 1, SEED_RANGE[1] + 1):
        with pytest.raises(UserError, match="seed must be a 64-bit integer"):
            GenerationConfig(seed=seed)


def test_k_and_the_token_budget_must_be_at_least_one() -> None:
    assert (GenerationConfig(k=1, max_new_tokens=1).k, GenerationConfig(max_new_tokens=1).max_new_tokens) == (1, 1)
    with pytest.raises(UserError, match="k \\(drafted tokens per step\\) must be >= 1, got 0"):
        GenerationConfig(k=0)
    with pytest.raises(UserError, match="max new tokens must be >= 1, got 0"):
        GenerationConfig(max_new_tokens=0)
