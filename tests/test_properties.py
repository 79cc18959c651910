"""Property-based checks of rules whose inputs are a space: the acceptance rules (the accepted prefix never exceeds
the prefix on which draft and target agree) and the feedback buffer's bound."""

from __future__ import annotations

import torch
from conftest import feedback_record
from hypothesis import given, settings
from hypothesis import strategies as st

from onlinespec.decoding.verify import verify_greedy, verify_sampling
from onlinespec.online.feedback_buffer import FeedbackBuffer

V = 6


@st.composite
def verify_step(draw):
    """A target's scores at k+1 positions and k drafted tokens (small vocabulary, so matches are frequent)."""
    k = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(k + 1, V, generator=gen) * draw(st.sampled_from([0.1, 1.0, 5.0]))
    tokens = torch.tensor(draw(st.lists(st.integers(0, V - 1), min_size=k, max_size=k)))
    return logits, tokens, seed


@settings(max_examples=300, deadline=None)
@given(step=verify_step())
def test_greedy_accepts_exactly_the_matching_prefix(step) -> None:
    logits, tokens, _ = step
    n, next_token = verify_greedy(logits, tokens)
    choice = logits.argmax(-1)
    matching = 0
    while matching < tokens.numel() and tokens[matching] == choice[matching]:
        matching += 1
    assert int(n) == matching
    assert int(next_token) == int(choice[matching])  # the correction, or the bonus when all k matched


@settings(max_examples=300, deadline=None)
@given(step=verify_step(), q_scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_sampling_never_accepts_a_token_the_target_cannot_emit(step, q_scale: float) -> None:
    """With p zero outside its top-2, an accepted draft token always has p > 0 (u q <= p fails for p = 0), the
    accepted count is at most k, and the emitted token always has p > 0."""
    logits, tokens, seed = step
    gen = torch.Generator().manual_seed(seed)
    k = tokens.numel()
    top2 = logits.topk(2, dim=-1).indices
    p = torch.zeros(k + 1, V).scatter_(1, top2, logits.gather(1, top2).softmax(-1))
    q = (torch.randn(k, V, generator=gen) * q_scale).softmax(-1)
    n, next_token = verify_sampling(p, q, tokens, gen)
    n = int(n)
    assert 0 <= n <= k
    assert all(p[i, tokens[i]] > 0 for i in range(n))
    assert p[n, next_token] > 0


@settings(max_examples=100, deadline=None)
@given(
    bound=st.integers(1, 20),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(0, 4)), min_size=1, max_size=25),
    top_k=st.sampled_from([0, 2]),
    positions=st.sampled_from(["all", "mismatch"]),
)
def test_the_feedback_buffer_never_holds_more_than_its_bound(bound, steps, top_k: int, positions: str) -> None:
    buffer = FeedbackBuffer(top_k=top_k, positions=positions, max_positions=bound)
    offered = 0
    for request, k, accepted in steps:
        n = min(accepted, k)
        buffer.add(feedback_record(request, k, n, V))
        offered += n + 1 if positions == "all" else int(n < k)
        assert buffer.size <= bound
        assert buffer.size + buffer.dropped == offered  # nothing lost without being counted
    assert buffer.size == min(offered, bound)  # the oldest positions go first, only past the bound
    examples = buffer.drain()
    assert sum(len(e.pred_index) for e in examples) == min(offered, bound)
    assert all(len(e.pred_index) == len(e.top_ids) == len(e.top_probs) == len(e.tail) for e in examples)
    assert buffer.size == 0 and buffer.drain() == []
