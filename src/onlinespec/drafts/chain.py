"""Drafting a chain one token at a time: what every chain-drafting kind records for verification."""

from __future__ import annotations

import torch

from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.sampling import SamplingConfig, probs_from_logits, sample


class ChainRecorder:
    """Collects a drafted chain one token at a time: greedy argmax, or a sample from q (kept for verification)."""

    def __init__(self, sampling: SamplingConfig, generator: torch.Generator | None) -> None:
        self.sampling, self.generator = sampling, generator
        self.tokens: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.probs: list[torch.Tensor] = []

    def choose(self, step_logits: torch.Tensor) -> torch.Tensor:
        """step_logits [V] (target vocabulary) -> the drafted token, LongTensor [1]."""
        if self.sampling.greedy:
            token = step_logits.argmax(dim=-1, keepdim=True)
        else:
            q = probs_from_logits(step_logits[None], self.sampling)
            token = sample(q, self.generator)
            self.probs.append(q[0])
        self.tokens.append(token)
        self.logits.append(step_logits)
        return token

    def proposal(self) -> Proposal:
        """The chain so far: tokens [k], logits [k, V], probs [k, V] (None when greedy)."""
        return Proposal(
            tokens=torch.cat(self.tokens),
            logits=torch.stack(self.logits),
            probs=torch.stack(self.probs) if self.probs else None,
        )
