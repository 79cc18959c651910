"""Hydra draft heads (docs/method.md §3): Medusa heads that also read the tokens drafted before them.

Head i (1-based, i = 1..H) guesses x_{t+1+i} from concat(f_t, e(x_{t+1}), e(d_1), .., e(d_{i-1})) [(i+1) d],
where e is the target's frozen token embedding and d_j the tokens drafted on the path so far (teacher-forced in
training: d_j = x_{t+1+j}). The input block is h = f_t + SiLU(W x + b), then num_layers - 1 residual blocks
h = h + SiLU(W' h + b'), then the target's frozen LM head. All W, b start at zero, so an untrained Hydra head,
like an untrained Medusa head, is the target's LM head applied to f_t; training makes it path-dependent.
No final norm, for the reason given in drafts/depth_heads.py (the features are already post-norm).

Decoding uses drafts/depth_heads.py's DepthHeadsDraft: a tree node's children come from the head of the next depth
given that node's whole path.
"""

from __future__ import annotations

import torch
from torch import nn

from onlinespec.drafts.depth_heads import DepthHeads, ResidualBlock


class HydraHead(DepthHeads):
    """Trainable: `inputs` and `blocks`. Shared with the target and frozen: its token embeddings and LM head."""

    kind = "hydra"
    trainable_prefixes = ("inputs.", "blocks.")

    def add_heads(self, target: nn.Module) -> None:
        d, heads = self.hidden_size, range(1, self.num_heads + 1)
        self.inputs = nn.ModuleList(ResidualBlock(d, (i + 1) * d) for i in heads).to(self.param_dtype)
        self.blocks = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(d) for _ in range(self.num_layers - 1))) for _ in heads
        ).to(self.param_dtype)
        self.embed = target.get_input_embeddings()

    def _head(self, i: int, feature: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """Head i (1-based): feature [..., d], embedded [..., i * d] = e(x_{t+1}) .. e(d_{i-1}) -> logits [..., Vd]."""
        h = self.inputs[i - 1](feature, torch.cat([feature, embedded], dim=-1))
        return self.vocab.logits(self.blocks[i - 1](h))

    def forward(self, features: torch.Tensor, next_ids: torch.Tensor) -> list[torch.Tensor]:
        """Teacher-forced training pass. features [B, T, d] = f_0..f_{T-1}; next_ids [B, T] = x_1..x_T.

        Returns H tensors; output i-1 is [B, T-i+1, Vd] (head i needs x_{t+1}..x_{t+i}, so its last steps are
        missing): row t guesses x_{t+i+1}, i.e. matches the target's p at position t + i.
        """
        with torch.no_grad():
            embedded = self.embed(next_ids)  # frozen: no gradient flows into the target's embeddings
        length = features.shape[1]
        outputs = []
        for i in range(1, self.num_heads + 1):
            n = max(length - i + 1, 0)
            window = torch.cat([embedded[:, j : j + n] for j in range(i)], dim=-1)  # [B, n, i * d]
            outputs.append(self._head(i, features[:, :n], window))
        return outputs

    def step_logits(self, feature: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """Drafting: feature [d] = f_t; paths [N, j] = (x_{t+1}, d_1 .. d_{j-1}) per candidate.

        Returns head j's draft logits [N, Vd] for the token after each path."""
        n, j = paths.shape
        embedded = self.embed(paths).reshape(n, -1)  # [N, j * d]
        return self._head(j, feature.expand(n, -1), embedded)
