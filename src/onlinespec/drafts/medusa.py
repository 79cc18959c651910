"""Medusa draft heads (docs/method.md §3).

Head i (1-based, i = 1..H) reads the target's last-layer feature f_t alone and guesses x_{t+1+i}: f_t already
fixed x_{t+1} (the target's own next token), so head 1 drafts the token after it. Each head is a stack of
residual blocks h = h + SiLU(W h + b) on f_t, then the target's frozen LM head. W and b start at zero, so an
untrained head is exactly the target's LM head applied to f_t (the usual Medusa initialisation). No final norm,
for the reason given in drafts/depth_heads.py (the features are already post-norm).

Decoding uses drafts/depth_heads.py's DepthHeadsDraft, as Hydra does.
"""

from __future__ import annotations

import torch
from torch import nn

from onlinespec.drafts.depth_heads import DepthHeads, ResidualBlock


class MedusaHead(DepthHeads):
    """Trainable: `heads` (H stacks of residual blocks). Shared with the target and frozen: its LM head."""

    kind = "medusa"
    trainable_prefixes = ("heads.",)

    def add_heads(self, target: nn.Module) -> None:
        d = self.hidden_size
        self.heads = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(d) for _ in range(self.num_layers))) for _ in range(self.num_heads)
        ).to(self.param_dtype)

    def forward(self, features: torch.Tensor, next_ids: torch.Tensor) -> list[torch.Tensor]:
        """Training pass. features [B, T, d] = f_0..f_{T-1}; next_ids [B, T] (unused: Medusa reads f_t only).

        Returns H tensors [B, T, Vd]; output i, row t guesses x_{t+i+2}, i.e. matches the target's p at t+i+1.
        """
        return [self.vocab.logits(head(features)) for head in self.heads]

    def step_logits(self, feature: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """Drafting: feature [d] = f_t; paths [N, j] = (x_{t+1}, d_1 .. d_{j-1}) per candidate.

        Returns head j's draft logits [N, Vd] for the token after each path (the same for all: Medusa ignores
        the tokens)."""
        logits = self.vocab.logits(self.heads[paths.shape[1] - 1](feature))
        return logits.expand(paths.shape[0], -1)
