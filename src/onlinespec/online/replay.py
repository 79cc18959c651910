"""Several steps per round (issue 11.2): the mini-batch schedule over a round's training set, and the bounded replay
buffer of earlier rounds' feedback that joins it (FTRL-style: each round's update fits the recent past too).

Prequential: the update that ends round t (and makes the draft of round t+1) sees the feedback of rounds <= t;
the buffer receives round t's feedback only after that update, so the replayed part is rounds < t.

How steps relate (docs/method.md §2, "Several steps per round"): the round's training set is the replayed requests
(oldest first) then the round's own; each epoch cuts it, in that order, into mini-batches of `batch_requests`
requests (0 = one batch holding all); each mini-batch is one `learner.update` call, i.e. one learner round of
`LearnerConfig.passes` gradient steps on that mini-batch. Steps per round = epochs * batches * passes. The defaults
(one batch, one epoch, no replay) are one update on the round's own feedback: the original rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from onlinespec.errors import UserError
from onlinespec.online.feedback_buffer import RequestExamples


def minibatches(examples: list[RequestExamples], batch_requests: int, epochs: int) -> list[list[RequestExamples]]:
    """The update's steps in order: `epochs` passes over `examples`, each cut into consecutive batches of
    `batch_requests` requests (0 = all of them in one batch; the last batch of an epoch may be smaller)."""
    if batch_requests < 0 or epochs < 1:
        raise UserError(f"need batch_requests >= 0 and epochs >= 1, got {batch_requests} and {epochs}")
    if not examples:
        return []
    size = batch_requests or len(examples)
    batches = [examples[i : i + size] for i in range(0, len(examples), size)]
    return [batch for _ in range(epochs) for batch in batches]


def example_bytes(ex: RequestExamples) -> int:
    """Memory of one request's stored feedback: its tensors plus 8 bytes per position (index) and 4 (tail)."""
    tensors = [ex.context_ids, *ex.top_ids, *ex.top_probs] + ([ex.features] if ex.features is not None else [])
    return sum(t.numel() * t.element_size() for t in tensors) + 12 * len(ex.pred_index)


def positions(examples: list[RequestExamples]) -> int:
    return sum(len(e.pred_index) for e in examples)


@dataclass
class ReplayBuffer:
    """Earlier rounds' requests, at most `max_positions` positions (0 = no replay); the oldest requests leave first
    (an oldest request that alone overflows the bound loses its oldest positions)."""

    max_positions: int = 0

    def __post_init__(self) -> None:
        if self.max_positions < 0:
            raise UserError(f"replay_positions must be >= 0, 0 = no replay (got {self.max_positions})")
        self.requests: list[RequestExamples] = []

    @property
    def size(self) -> int:
        """Positions held."""
        return positions(self.requests)

    @property
    def nbytes(self) -> int:
        return sum(example_bytes(e) for e in self.requests)

    def examples(self) -> list[RequestExamples]:
        """The requests held, oldest first (the list is a copy; the requests are shared, never modified)."""
        return list(self.requests)

    def add(self, examples: list[RequestExamples]) -> None:
        """Keep `examples` (a finished round's), then drop the oldest positions beyond the bound."""
        if self.max_positions == 0:
            return
        self.requests.extend(e for e in examples if e.pred_index)
        excess = self.size - self.max_positions
        while excess > 0:
            oldest = self.requests[0]
            if len(oldest.pred_index) <= excess:
                self.requests.pop(0)
                excess -= len(oldest.pred_index)
            else:
                self.requests[0] = _drop_first(oldest, excess)
                excess = 0

    def state_dict(self) -> dict:
        """Plain lists and tensors (saved with the learner state in --draft-state)."""
        return {
            "max_positions": self.max_positions,
            "requests": [
                {
                    "context_ids": e.context_ids,
                    "pred_index": list(e.pred_index),
                    "top_ids": list(e.top_ids),
                    "top_probs": list(e.top_probs),
                    "tail": list(e.tail),
                    "features": e.features,
                    "unroll": e.unroll,
                }
                for e in self.requests
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        self.requests = [RequestExamples(**r) for r in state.get("requests", [])]
        self.add([])  # a smaller bound than the saved one applies at once


def _drop_first(ex: RequestExamples, n: int) -> RequestExamples:
    """A copy of `ex` without its first n positions (the context and features stay: later positions need them)."""
    return RequestExamples(
        context_ids=ex.context_ids,
        pred_index=ex.pred_index[n:],
        top_ids=ex.top_ids[n:],
        top_probs=ex.top_probs[n:],
        tail=ex.tail[n:],
        features=ex.features,
        unroll=ex.unroll,
    )
