"""The one protocol every draft kind implements; the engine talks to drafts only through it.

A new draft kind is one new file implementing `Draft` (DESIGN.md: seam 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from onlinespec.decoding.sampling import SamplingConfig


@dataclass
class Proposal:
    """k drafted tokens and the draft distributions they were chosen from (V = the TARGET's vocabulary size)."""

    tokens: torch.Tensor  # LongTensor [k]
    logits: torch.Tensor  # [k, V] raw draft logits (ids the draft cannot produce hold -inf)
    probs: torch.Tensor | None  # [k, V] q after the request's logits processing; None when greedy


class Draft(Protocol):
    """A proposer of k tokens that keeps its own state across the steps of one request."""

    name: str
    wants_target_hidden: bool  # ask the engine to keep the target's hidden states in feedback records

    def begin(self, prompt_ids: torch.Tensor) -> None:
        """Start a new request. prompt_ids: LongTensor [T]."""

    def propose(
        self, ids: torch.Tensor, k: int, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> Proposal:
        """Draft k tokens continuing the committed sequence ids: LongTensor [L]."""

    def commit(self, num_accepted: int) -> None:
        """The target accepted the first `num_accepted` drafted tokens; roll internal state back to match."""
