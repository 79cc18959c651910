"""The round loop for a draft that learns both ways (drafts/hybrid.py): a head by gradient, an n-gram index by
counting. `Pipeline.enable_learning` picks it for a draft that is both a `TrainableDraft` and a `CountingDraft`.

Everything of `OnlineLearning` (online/session.py) holds for the head: feedback buffer, learner, schedule,
replay, prompt positions, publication. On top of it, for the index (as online/counting_session.py does it):
- feedback: each learned request's committed tokens too (online/committed_text.py); private requests give none;
- update: `draft.learn(requests)` after every `index_every` learned requests (online/index_learning.py; default
  every request) and at each round boundary for what is left, before the head's update and before the snapshot, on
  the decoding thread whatever the schedule (proposals read the index: a background thread would race with them);
  its time counts in the round's update time;
- snapshot: the index tensors go into draft.safetensors next to the head's, under INDEX_PREFIX, and its description
  into state.json under "counting"; a state saved for another draft, tokenizer or layout is refused.
`static` freezes both parts (a restored index is used, nothing is added). The learner `count` trains the index
alone (online/counting_session.py runs it; the head stays frozen): the two kinds of state refuse each other.
"""

from __future__ import annotations

import torch

from onlinespec.errors import UserError
from onlinespec.online.committed_text import CommittedText
from onlinespec.online.counting_draft import COUNT
from onlinespec.online.counting_session import INDEX_PREFIX, load_counting_state
from onlinespec.online.feedback_buffer import FeedbackBuffer
from onlinespec.online.index_learning import IndexLearning
from onlinespec.online.session import OnlineLearning


class HybridLearning(IndexLearning, OnlineLearning):
    """A learning session for a draft that is both trainable (its head) and counting (its lookup index)."""

    def _attach(self, draft) -> FeedbackBuffer:
        self._committed, self._index_round = CommittedText(self._cfg.max_positions), {}
        return super()._attach(draft)

    def _on_feedback(self, record) -> None:
        if not self._private:
            self._buffer.add(record)
            self._committed.add(record)

    def _boundary_update(self) -> dict:
        return self._take_index_round(self._committed.drain())

    def _draft_memory(self) -> dict[str, float]:
        return self._draft.memory()

    def _draft_tensors(self) -> dict[str, torch.Tensor]:
        index = {INDEX_PREFIX + name: t for name, t in self._draft.state_tensors().items()}
        return {**super()._draft_tensors(), **index}

    def _info(self) -> dict:
        return {**super()._info(), "counting": self._draft.describe()}

    def _load(self, tensors: dict[str, torch.Tensor], learner_state: dict, info: dict, directory: str) -> None:
        if info.get("draft") == self._draft.name and info.get("config", {}).get("learner") == COUNT:
            raise UserError(
                f"draft state in '{directory}' was saved by learner '{COUNT}' (the index alone, no trained head): "
                f"resume it with --learner {COUNT}, or use another --draft-state directory"
            )
        index = {n[len(INDEX_PREFIX) :]: t for n, t in tensors.items() if n.startswith(INDEX_PREFIX)}
        head = {n: t for n, t in tensors.items() if not n.startswith(INDEX_PREFIX)}
        super()._load(head, learner_state, info, directory)  # refuses another draft's state
        if "counting" not in info:
            raise UserError(
                f"draft state in '{directory}' holds no n-gram index for draft '{self._draft.name}': use another "
                "--draft-state directory"
            )
        load_counting_state(self._draft, index, info["counting"], directory)
