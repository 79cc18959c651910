"""Logits processing shared by target and draft, and sampling from the result.

Speculative sampling is exact only if p (target) and q (draft) come from the SAME processing (docs/method.md §1), so
both go through `probs_from_logits` with one `SamplingConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onlinespec.errors import UserError

# Temperatures below this sample like temperature 0 (greedy), the limit they approach: dividing logits by a
# smaller one overflows float32 (1e-38 gives inf, 1e-320 rounds to 0) and would turn p into NaNs.
MIN_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"top-k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top-p must be in (0, 1] (1 = off), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE


def probs_from_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p (the HF order) -> probabilities.

    logits: [..., V] (any float dtype). Returns float32 probabilities [..., V] summing to 1 on the last axis.
    """
    scores = logits.float() if cfg.greedy else logits.float() / cfg.temperature
    if cfg.top_k > 0 and cfg.top_k < scores.shape[-1]:
        kth = torch.topk(scores, cfg.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        sorted_probs = sorted_scores.softmax(dim=-1)
        # Drop a token when the mass strictly before it already reaches top_p (the top token always stays).
        drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= cfg.top_p
        drop_sorted[..., 0] = False  # also when top_p underflows float32 (1e-46 compares as 0)
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores.softmax(dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row. probs: [N, V] -> LongTensor [N]."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
