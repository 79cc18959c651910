"""The hybrid's per-source scores and the gate on earlier traffic (drafts/source_gate.py), by hand-checked numbers."""

from __future__ import annotations

import pytest
import torch

from onlinespec.drafts.source_gate import RECENT_DECAY, SourceGate


def ids(n: int) -> torch.Tensor:
    return torch.arange(n)


def test_a_proposal_scores_the_prefix_the_target_committed_at_most_what_was_committed() -> None:
    gate = SourceGate()
    gate.proposed("head", ids(5), torch.tensor([7, 8, 9]), drafted=True)
    gate.proposed("shared", ids(5), torch.tensor([7, 3]), drafted=False)
    gate.settle(torch.cat([ids(5), torch.tensor([7, 8])]))  # committed 7, 8: head 2 (its 9 unknown yet), shared 1
    head, shared = gate.scores["head"], gate.scores["shared"]
    assert (head.steps, head.scored, head.first_right, head.matched, head.recent) == (1, 1, 1, 2, 2)
    assert (shared.steps, shared.scored, shared.first_right, shared.matched, shared.recent) == (0, 1, 1, 1, 1)
    assert gate.held_back == 1
    gate.settle(ids(9))  # nothing pending: nothing changes
    assert head.scored == 1 and shared.scored == 1
    gate.proposed("request", ids(7), torch.tensor([1, 2]), drafted=True)
    gate.settle(torch.cat([ids(7), torch.tensor([4])]))  # the first token was rejected
    request = gate.scores["request"]
    assert (request.scored, request.first_right, request.recent) == (1, 0, 0)
    report = gate.report()
    assert report["head"]["first_token_rate"] == 1.0 and report["head"]["mean_score"] == 2.0
    assert report["request"]["first_token_rate"] == 0.0 and report["held_back"] == 1


def test_recent_score_is_a_moving_average() -> None:
    gate = SourceGate()
    for committed in ([5], [5], [6]):  # scores 1, 1, 0
        gate.proposed("head", ids(3), torch.tensor([5]), drafted=True)
        gate.settle(torch.cat([ids(3), torch.tensor(committed)]))
    assert gate.scores["head"].recent == pytest.approx(RECENT_DECAY * 1.0)  # 1, then 1, then 0.9 * 1 + 0.1 * 0


def test_the_gate_closes_while_earlier_traffic_scores_below_the_head_and_reopens() -> None:
    gate = SourceGate()
    assert gate.shared_open()  # no scores yet
    gate.proposed("shared", ids(4), torch.tensor([1]), drafted=True)
    gate.settle(torch.cat([ids(4), torch.tensor([2])]))  # shared 0
    assert gate.shared_open()  # the head has no score yet
    gate.proposed("head", ids(5), torch.tensor([3]), drafted=True)
    gate.settle(torch.cat([ids(5), torch.tensor([3])]))  # head 1
    assert not gate.shared_open()
    for step in range(40):  # held back, earlier traffic is right again; the head keeps being wrong
        gate.proposed("shared", ids(6 + step), torch.tensor([9]), drafted=False)
        gate.proposed("head", ids(6 + step), torch.tensor([8]), drafted=True)
        gate.settle(torch.cat([ids(6 + step), torch.tensor([9])]))
        if gate.shared_open():
            break
    assert gate.shared_open() and gate.held_back == step + 1 == 7  # 1 - 0.9^7 >= 0.9^7 first at the 7th
    disabled = SourceGate(enabled=False)
    disabled.scores["shared"].add(0)
    disabled.scores["head"].add(2)
    assert disabled.shared_open()


def test_a_new_request_drops_the_unscored_last_proposal() -> None:
    gate = SourceGate()
    gate.proposed("head", ids(5), torch.tensor([1]), drafted=True)
    gate.forget()
    gate.settle(torch.tensor([9, 9, 9, 9, 9, 1]))  # another request's ids: not compared
    assert gate.scores["head"].scored == 0 and gate.scores["head"].steps == 1
