"""What a draft that learns WITHOUT gradients must offer: the protocol the counting session consumes.

Declared here, by its consumer (online/counting_session.py), as `TrainableDraft` is for gradient learners. The
lookup draft (drafts/lookup.py) implements it: it learns by counting the n-grams of what the target committed.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

COUNT = "count"  # the learner name of counting drafts (`--learner count`); "static" freezes them instead


@runtime_checkable
class CountingDraft(Protocol):
    """A draft whose state grows from committed text: no parameters, no loss, nothing to publish."""

    name: str

    def learn(self, requests: list[torch.Tensor]) -> dict[str, float]:
        """Add the committed tokens of each request (LongTensor [L] each: prompt then verified output) to the
        draft's shared state; returns telemetry (what was added, what the state now holds)."""
        ...

    def memory(self) -> dict[str, float]:
        """What the shared state holds now: at least "entries" and "bytes" (approximate), and "max_entries"."""
        ...

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The shared state as fresh tensors (safe to write from another thread while decoding goes on)."""
        ...

    def describe(self) -> dict:
        """JSON-ready: what a saved state must match to be loaded here (vocabulary, tokenizer, layout)."""
        ...

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        """Replace the shared state by a saved one (`info`: its `describe()`). A ValueError saying what does not
        match (another tokenizer or vocabulary size, another layout, corrupt tensors) leaves the current state."""
        ...
