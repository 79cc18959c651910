"""Turns the engine's feedback records into training examples for the draft, within a memory bound.

For each verify step that accepted n of k drafts, the positions whose context is fully committed are 0..n
(n accepted drafts plus the correction/bonus position). `positions="all"` trains on all of them (default);
`positions="mismatch"` only on the first rejected position (OSD). The target distribution p is kept as its top-K
entries plus the remaining tail mass: memory per position = K * 12 bytes (int64 id + fp32 prob) + 4 bytes, e.g.
780 bytes for K = 64; K = 0 keeps the full distribution (V * 12 bytes, 590 KB for a 49k vocabulary).
Contexts are stored once per request (the longest committed prefix seen), not once per position; so are the
target's features of the committed positions when the draft is a head (d * 4 bytes per token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from onlinespec.decoding.feedback import FeedbackRecord
from onlinespec.errors import UserError

POSITION_MODES = ("all", "mismatch")

TRAINED_SOURCES = ("", "head")  # proposal sources whose chain length an unrolled head trains to (unroll)


@dataclass
class RequestExamples:
    """All training positions of one request. P = positions, K = kept entries of p."""

    context_ids: torch.Tensor  # LongTensor [L]: committed tokens (the longest prefix seen)
    pred_index: list[int] = field(default_factory=list)  # logits at index j of context_ids predict token j + 1
    top_ids: list[torch.Tensor] = field(default_factory=list)  # each LongTensor [K]
    top_probs: list[torch.Tensor] = field(default_factory=list)  # each float32 [K]
    tail: list[float] = field(default_factory=list)  # target mass outside the kept ids
    features: torch.Tensor | None = None  # [L', d] target features of committed positions (head drafts only)
    unroll: int = 0  # passes an unrolled head trains: the longest chain its trained part drafted (not a lookup's)


class FeedbackBuffer:
    """A feedback listener (`engine.add_listener(buffer.add)`) that holds at most `max_positions` positions;
    the oldest positions are dropped first when it is full. `drain()` hands a round's examples to the learner."""

    def __init__(self, top_k: int = 64, positions: str = "all", max_positions: int = 65536) -> None:
        if positions not in POSITION_MODES:
            raise UserError(f"unknown training positions '{positions}': choose one of {', '.join(POSITION_MODES)}")
        if top_k < 0 or max_positions < 1:
            raise UserError("feedback buffer needs top_k >= 0 (0 = full distribution) and max_positions >= 1")
        self.top_k = top_k
        self.positions = positions
        self.max_positions = max_positions
        self.requests: dict[int, RequestExamples] = {}
        self.size = 0
        self.dropped = 0

    def add(self, record: FeedbackRecord) -> None:
        n = record.num_accepted
        k = record.draft_tokens.numel()
        rows = range(n + 1) if self.positions == "all" else ([n] if n < k else [])
        if not rows:
            return
        committed = record.context_ids[: record.first_position + 1 + n]
        p = record.target_probs if record.target_probs is not None else record.target_logits.float().softmax(-1)
        p = p[list(rows)]
        if 0 < self.top_k < p.shape[-1]:
            top_probs, top_ids = p.topk(self.top_k, dim=-1)
        else:
            top_ids = torch.arange(p.shape[-1]).expand(p.shape[0], -1)
            top_probs = p
        tails = (1.0 - top_probs.sum(-1)).clamp_min(0.0).tolist()
        entry = self.requests.get(record.request_id)
        if entry is None:
            entry = self.requests[record.request_id] = RequestExamples(committed.clone())
        elif committed.numel() > entry.context_ids.numel():
            entry.context_ids = committed.clone()
        features = record.context_features
        if features is not None and (entry.features is None or features.shape[0] > entry.features.shape[0]):
            # a view of the engine's per-request feature buffer (committed rows never change); cloned in drain()
            entry.features = features
        if record.draft_source in TRAINED_SOURCES:  # lookup chains (up to k = 7) are not what the head drafts
            entry.unroll = max(entry.unroll, k)
        for j, row in enumerate(rows):
            entry.pred_index.append(record.first_position + row)
            entry.top_ids.append(top_ids[j].clone())
            entry.top_probs.append(top_probs[j].float().clone())
            entry.tail.append(tails[j])
        self.size += len(rows)
        self._enforce_bound()

    def _enforce_bound(self) -> None:
        while self.size > self.max_positions:
            oldest_id = next(iter(self.requests))
            oldest = self.requests[oldest_id]
            oldest.pred_index.pop(0), oldest.top_ids.pop(0), oldest.top_probs.pop(0), oldest.tail.pop(0)
            self.size -= 1
            self.dropped += 1
            if not oldest.pred_index:
                del self.requests[oldest_id]

    def drain(self) -> list[RequestExamples]:
        """Return and forget everything collected so far.

        Records arrive under torch.inference_mode, whose tensors autograd refuses; cloning them here, outside
        that mode, gives ordinary tensors the learner can differentiate through.
        """
        examples = [_ordinary(r) for r in self.requests.values() if r.pred_index]
        self.requests, self.size = {}, 0
        return examples


def _ordinary(r: RequestExamples) -> RequestExamples:
    return RequestExamples(
        context_ids=r.context_ids.clone(),
        pred_index=r.pred_index,
        top_ids=[t.clone() for t in r.top_ids],
        top_probs=[t.clone() for t in r.top_probs],
        tail=r.tail,
        features=None if r.features is None else r.features.clone(),
        unroll=r.unroll,
    )
