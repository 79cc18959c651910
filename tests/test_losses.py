"""Divergences on the coarsened {top-K, tail} space: exact with full p, zero iff the distributions agree."""

from __future__ import annotations

import pytest
import torch

from onlinespec.online.losses import DIVERGENCES, LOSSES, divergence


def full_p(logits: torch.Tensor):
    p = logits.softmax(-1)
    ids = torch.arange(p.shape[-1]).expand_as(p)
    return ids, p, torch.zeros(p.shape[0])


def test_forward_kl_with_full_p_equals_torch_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    target, draft = torch.randn(5, 11, generator=gen), torch.randn(5, 11, generator=gen)
    ids, p, tail = full_p(target)
    expected = torch.nn.functional.kl_div(draft.log_softmax(-1), p, reduction="sum")
    torch.testing.assert_close(divergence(draft, ids, p, tail, "forward_kl"), expected, atol=1e-5, rtol=1e-5)
    expected_reverse = torch.nn.functional.kl_div(target.log_softmax(-1), draft.softmax(-1), reduction="sum")
    torch.testing.assert_close(divergence(draft, ids, p, tail, "reverse_kl"), expected_reverse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_zero_when_draft_equals_target_and_positive_otherwise(kind: str) -> None:
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    probs = logits.softmax(-1)
    top_probs, top_ids = probs.topk(3, dim=-1)
    tail = 1 - top_probs.sum(-1)
    assert abs(float(divergence(logits, top_ids, top_probs, tail, kind))) < 1e-5
    assert float(divergence(logits.flip(-1), top_ids, top_probs, tail, kind)) > 0.01


def test_truncated_forward_kl_is_a_lower_bound_of_the_full_one() -> None:
    gen = torch.Generator().manual_seed(2)
    target, draft = torch.randn(6, 20, generator=gen) * 2, torch.randn(6, 20, generator=gen)
    ids, p, tail = full_p(target)
    top_probs, top_ids = p.topk(4, dim=-1)
    truncated = divergence(draft, top_ids, top_probs, 1 - top_probs.sum(-1), "forward_kl")
    assert 0 < float(truncated) <= float(divergence(draft, ids, p, tail, "forward_kl")) + 1e-6


def test_top1_is_the_cross_entropy_to_the_targets_most_likely_token() -> None:
    """By hand: -log softmax(draft)[argmax p], summed over positions; a top token the draft cannot emit (-1) adds
    nothing and passes no gradient; the rest of p does not matter."""
    draft = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]], requires_grad=True)
    top_ids = torch.tensor([[2, 0], [1, 2], [-1, 0]])
    top_probs = torch.tensor([[0.6, 0.3], [0.9, 0.05], [0.5, 0.4]])
    tail = 1 - top_probs.sum(-1)
    loss = divergence(draft, top_ids, top_probs, tail, "top1")
    log_q = draft.detach().log_softmax(-1)
    torch.testing.assert_close(loss.detach(), -(log_q[0, 2] + log_q[1, 1]))
    loss.backward()
    assert draft.grad is not None and torch.all(draft.grad[2] == 0)
    flatter = torch.tensor([[0.34, 0.33], [0.5, 0.3]])
    assert divergence(draft.detach()[:2], top_ids[:2], flatter, 1 - flatter.sum(-1), "top1") == pytest.approx(
        float(loss.detach()), rel=1e-6
    )
    assert "top1" in LOSSES
