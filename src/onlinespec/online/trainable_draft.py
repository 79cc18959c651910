"""What a draft must offer to be learned online: the protocol the learners consume (drafts implement it).

Declared here, by its consumer, as `decoding/` declares `Draft`: online learning reaches a draft only through
these members. Layer-skip and independent-LM drafts (`CausalLMDraft`) and every feature-level head draft
(`HeadDraft`) implement it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from onlinespec.online.feedback_buffer import RequestExamples

# One training term of a request: (weight, logits [P, Vd] over the draft's own vocabulary, rows into the request's
# positions 0..P-1 that those logits predict).
ExampleTerm = tuple[float, torch.Tensor, list[int]]


@runtime_checkable
class TrainableDraft(Protocol):
    """A draft whose parameters `trainable` (names in `model.named_parameters()`) a learner may update."""

    name: str
    model: nn.Module
    trainable: list[str]

    def example_terms(self, call: Callable[..., object], ex: RequestExamples) -> list[ExampleTerm]:
        """One request's training terms. `call(**kwargs)` runs (a training copy of) `model` with the learner's
        parameter values; the draft decides what to feed it (tokens, the target features stored with `ex`)."""
        ...

    def draft_ids(self, target_ids: torch.Tensor) -> torch.Tensor:
        """Target token ids (any shape) -> the draft's own logit columns, same shape; -1 where the draft's
        vocabulary lacks the token."""
        ...
