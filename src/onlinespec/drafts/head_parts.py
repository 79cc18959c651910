"""The building blocks every feature-level draft head (EAGLE, Medusa, Hydra) shares with its target, and the draft
vocabulary. (What a head must offer is declared in drafts/head_protocol.py; the draft side is drafts/head_draft.py.)

Heads reuse the target's frozen token embeddings, final norm, rotary embedding and LM head; they own only their
small trainable part. A head may predict over a reduced vocabulary (the most frequent target tokens): exactness
is unaffected because verification uses the target's full distribution, and tokens outside the draft
vocabulary simply have q = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def decoder_of(target: nn.Module) -> nn.Module:
    """The target's decoder stack (the module holding `layers`, `norm`, `rotary_emb`)."""
    base = getattr(target, "model", None)
    if base is None or not hasattr(base, "layers") or not hasattr(base, "norm"):
        raise ValueError(f"{type(target).__name__} has no decoder stack at .model with .layers and .norm")
    return base


def causal_mask(length: int, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
    """Additive causal mask [1, 1, T, T] (0 = attend, min = masked), usable by eager and SDPA attention."""
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(length, length, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)[
        None, None
    ]


class DraftVocab(nn.Module):
    """The head's output vocabulary: the target's full vocabulary, or the subset `ids` (reduced vocabulary).

    V = target vocabulary, Vd = draft vocabulary (Vd = V when not reduced).
    """

    def __init__(self, lm_head: nn.Linear, ids: torch.Tensor | None = None) -> None:
        super().__init__()
        self.target_vocab = lm_head.weight.shape[0]
        self.lm_head = lm_head  # frozen, shared with the target
        self.reduced = ids is not None
        if ids is not None:
            ids = torch.as_tensor(ids, dtype=torch.long)
            if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= self.target_vocab:
                raise ValueError(f"draft vocabulary ids must lie in [0, {self.target_vocab})")
            index = torch.full((self.target_vocab,), -1, dtype=torch.long)
            index[ids] = torch.arange(ids.numel())
            self.register_buffer("ids", ids, persistent=False)
            self.register_buffer("index_of", index, persistent=False)
            # A frozen copy of the LM-head rows of the draft vocabulary: Vd x d instead of V x d per drafted token.
            self.register_buffer("weight", lm_head.weight.detach()[ids].clone(), persistent=False)

    @property
    def size(self) -> int:
        return int(self.ids.numel()) if self.reduced else self.target_vocab

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., d] (after the final norm) -> draft logits [..., Vd]."""
        return F.linear(hidden, self.weight) if self.reduced else self.lm_head(hidden)

    def to_target(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., Vd] -> [..., V]; ids outside the draft vocabulary get -inf (q = 0)."""
        if not self.reduced:
            return logits
        full = logits.new_full((*logits.shape[:-1], self.target_vocab), float("-inf"))
        full[..., self.ids] = logits
        return full

    def to_draft_ids(self, target_ids: torch.Tensor) -> torch.Tensor:
        """Target token ids -> draft vocabulary indices, -1 where the draft cannot produce the token."""
        return self.index_of[target_ids] if self.reduced else target_ids

    def to_target_ids(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return self.ids[draft_ids] if self.reduced else draft_ids


def init_linear_weights(module: nn.Module, std: float) -> None:
    """Small normal init for a fresh head's linear layers (the transformers convention), zero biases."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
