"""RequestStats is the one summable stats type: requests, rounds and runs add up field by field."""

from __future__ import annotations

import pytest

from onlinespec.decoding.metrics import RequestStats


def test_stats_add_field_by_field_and_define_tau_alpha_once() -> None:
    a = RequestStats(7, 10, 4, 9, 6, [1, 0, 2], wall_s=0.5, draft_s=0.25, target_s=0.125)
    b = RequestStats(3, 6, 4, 9, 2, [2, 1], wall_s=1.5, draft_s=0.5, target_s=0.25)
    total = a + b
    assert (total.prompt_tokens, total.new_tokens, total.target_forwards) == (10, 16, 8)
    assert (total.drafted, total.accepted, total.accept_hist) == (18, 8, [3, 1, 2])  # elementwise, padded
    assert (total.wall_s, total.draft_s, total.target_s) == (2.0, 0.75, 0.375)
    assert total.requests == 2  # a request counts 1
    assert total.tau == 2.0 and total.alpha == 8 / 18 and total.tokens_per_s == 8.0
    assert a.accept_hist == [1, 0, 2] and b.accept_hist == [2, 1]  # the operands are left alone
    assert "requests" not in total.to_dict()  # a request's output keeps its keys


def test_total_sums_in_order_and_is_zero_when_empty() -> None:
    a = RequestStats(new_tokens=3, target_forwards=2, drafted=4, accepted=1, accept_hist=[1, 1], wall_s=0.5)
    three = RequestStats.total([a, a, a])
    assert three == a + a + a and three.requests == 3 and three.accept_hist == [3, 3]
    assert three.tau == 1.5 and three.alpha == 0.25
    assert a.tokens_per_s == 6.0  # under a second of wall time
    empty = RequestStats.total([])
    assert empty == RequestStats.zero() and empty.requests == 0
    assert (empty.tau, empty.alpha, empty.tokens_per_s) == (0.0, 0.0, 0.0)
    assert a + RequestStats.zero() == a


def test_to_dict_rounds_each_rate_and_time() -> None:
    stats = RequestStats(5, 10, 3, 9, 2, [1, 1, 1], wall_s=3.00001, draft_s=1 / 3, target_s=2 / 3)
    assert stats.to_dict() == {
        "prompt_tokens": 5,
        "new_tokens": 10,
        "target_forwards": 3,
        "tau": 3.3333,
        "alpha": 0.2222,
        "tokens_per_s": 3.333,
        "wall_s": 3.0,
        "draft_s": 0.3333,
        "target_s": 0.6667,
        "drafted": 9,
        "accepted": 2,
        "accept_hist": [1, 1, 1],
    }


def test_count_step_extends_the_histogram_and_stats_add_only_to_stats() -> None:
    stats = RequestStats()
    stats.count_step(4, 2)
    stats.count_step(4, 0)
    stats.count_step(4, 4)
    assert (stats.drafted, stats.accepted, stats.accept_hist) == (12, 6, [1, 0, 1, 0, 1])
    with pytest.raises(TypeError):
        stats + 1  # noqa: B018  (NotImplemented makes python raise)
