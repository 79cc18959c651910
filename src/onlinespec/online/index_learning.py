"""A counting draft's n-gram index learned as requests end, not only at round boundaries.

Mixed into the sessions of drafts that count (online/counting_session.py: the lookup draft, or the hybrid draft
under `count`; online/hybrid_session.py: the hybrid draft learning both ways). After every
`OnlineConfig.index_every` learned requests (default 1) the requests' committed text collected so far goes into the
index (`draft.learn`), on the decoding thread between requests, as the boundary update did: proposals read the
index, so it never changes mid-request. Private requests give no text, so they are never learned. The round's
boundary learns what is left and reports the round's index telemetry in its record: counts (`index_added`,
`index_evicted`, `index_learned_tokens`, `index_update_s`, `index_updates`) summed over the round's updates,
sizes (`index_entries`, `index_bytes`, ...) as after the last. The time counts in the round's update time.

Why: an update is a few dict inserts a request (milliseconds), and what a request taught helps the very next one.
On the full preset's shifted stream (20 prompts a domain, rounds of 8) learning the index every 8 requests made
the default draft 1.05x faster than itself frozen, learning it after every request 1.12x, in one run
(docs/benchmarks.md, "The index learning after every request").
"""

from __future__ import annotations

import time

import torch

from onlinespec.online.committed_text import CommittedText

SUMMED = ("index_added", "index_evicted", "index_learned_tokens")  # the rest of `draft.learn`'s keys are sizes


class IndexLearning:
    """Set `self._committed` (the committed-text buffer) and `self._index_round = {}` in `_attach`."""

    _committed: CommittedText
    _index_round: dict

    def _after_each_request(self, requests: int) -> None:
        every = self._cfg.index_every
        if every and requests % every == 0:
            self._learn_index(self._committed.drain())

    def _learn_index(self, requests: list[torch.Tensor]) -> None:
        """Add `requests` (committed token ids, LongTensor [L] each) to the index; the round's telemetry grows."""
        if not requests:
            return
        tic = time.perf_counter()
        telemetry = self._draft.learn(requests)
        elapsed = time.perf_counter() - tic
        self._update_s += elapsed
        acc = self._index_round
        for key, value in telemetry.items():
            acc[key] = acc.get(key, 0) + value if key in SUMMED else value
        acc["index_update_s"] = acc.get("index_update_s", 0.0) + elapsed
        acc["index_updates"] = acc.get("index_updates", 0) + 1

    def _take_index_round(self, rest: list[torch.Tensor]) -> dict:
        """Learn `rest` (what the round's last requests left), then hand over the round's index telemetry."""
        self._learn_index(rest)
        telemetry, self._index_round = self._index_round, {}
        return telemetry
