"""A feedback listener that keeps only what each request committed: the counting session's feedback buffer.

A verify step's record holds the committed tokens plus the drafted ones; the committed prefix after the step is
`context_ids[: first_position + 1 + num_accepted]`. Kept per request: the longest such prefix, i.e. the prompt and
the verified output but for its last one or two tokens (the token the last verify step chose, and the token of a
final plain step when the budget left no room to draft), which no record shows.
Bounded like the feedback buffer: at most `max_tokens` tokens over all requests, the oldest requests dropped first.
"""

from __future__ import annotations

import torch

from onlinespec.decoding.feedback import FeedbackRecord


class CommittedText:
    """`engine.add_listener(text.add)`; `drain()` hands the round's requests (LongTensor [L] each) to the learner."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.requests: dict[int, torch.Tensor] = {}
        self.size = 0  # tokens held
        self.dropped = 0  # requests dropped by the bound

    def add(self, record: FeedbackRecord) -> None:
        committed = record.context_ids[: record.first_position + 1 + record.num_accepted]
        held = self.requests.get(record.request_id)
        if held is not None and held.shape[0] >= committed.shape[0]:
            return
        self.size += committed.shape[0] - (0 if held is None else held.shape[0])
        self.requests[record.request_id] = committed  # a fresh tensor per record: the engine never writes it again
        while self.size > self.max_tokens and len(self.requests) > 1:
            oldest = next(iter(self.requests))
            self.size -= self.requests.pop(oldest).shape[0]
            self.dropped += 1

    def drain(self) -> list[torch.Tensor]:
        """Return and forget the requests collected so far, oldest first."""
        requests, self.requests, self.size = list(self.requests.values()), {}, 0
        return requests
