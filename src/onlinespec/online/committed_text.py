"""A feedback listener that keeps only what each request committed: the counting session's feedback buffer.

A verify step's record holds the committed tokens plus the drafted ones; the committed prefix after the step is
`context_ids[: first_position + 1 + num_accepted]`. Kept per request: the longest such prefix, i.e. the prompt and
the verified output but for its last one or two tokens (the token the last verify step chose, and the token of a
final plain step when the budget left no room to draft), which no record shows.
Bounded like the feedback buffer: at most `max_tokens` tokens over all requests, the oldest requests dropped first.
With `keep_features`, each request's target features of its committed positions are kept too (a view of the
engine's per-request feature buffer, whose committed rows never change): the hybrid draft's feature memory learns
from them (drafts/feature_memory.py).
"""

from __future__ import annotations

import torch

from onlinespec.decoding.feedback import FeedbackRecord


class CommittedText:
    """`engine.add_listener(text.add)`; `drain()` hands the round's requests (LongTensor [L] each) to the learner."""

    def __init__(self, max_tokens: int, keep_features: bool = False) -> None:
        self.max_tokens = max_tokens
        self.keep_features = keep_features
        self.requests: dict[int, torch.Tensor] = {}
        self.features: dict[int, torch.Tensor] = {}  # request id -> [committed length, F], with keep_features
        self.drained_features: list[torch.Tensor | None] | None = None  # the last drain's, with keep_features
        self.size = 0  # tokens held
        self.dropped = 0  # requests dropped by the bound

    def add(self, record: FeedbackRecord) -> None:
        committed = record.context_ids[: record.first_position + 1 + record.num_accepted]
        held = self.requests.get(record.request_id)
        if held is not None and held.shape[0] >= committed.shape[0]:
            return
        self.size += committed.shape[0] - (0 if held is None else held.shape[0])
        self.requests[record.request_id] = committed  # a fresh tensor per record: the engine never writes it again
        if self.keep_features and record.context_features is not None:
            self.features[record.request_id] = record.context_features[: committed.shape[0]]
        while self.size > self.max_tokens and len(self.requests) > 1:
            oldest = next(iter(self.requests))
            self.size -= self.requests.pop(oldest).shape[0]
            self.features.pop(oldest, None)
            self.dropped += 1

    def drain(self) -> list[torch.Tensor]:
        """Return and forget the requests collected so far, oldest first. With keep_features, `drained_features`
        then holds their features in the same order (None for a request whose records carried none)."""
        if self.keep_features:
            self.drained_features = [self.features.get(request_id) for request_id in self.requests]
        requests, self.requests, self.size, self.features = list(self.requests.values()), {}, 0, {}
        return requests
