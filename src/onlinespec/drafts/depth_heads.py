"""What Medusa and Hydra share: H heads over the target's last-layer feature, head i guessing the token i steps
past the next one, and the draft that decodes with any such one-head-per-depth model.

The draft keeps no cache: per step it needs only the newest real feature f_{L-2} (L = committed tokens; the last
committed token x_{L-1} has no feature yet, the target scores it in the next verify pass) and the tokens chosen
so far. Depth is bounded by H: a chain proposes min(k, H) tokens, a tree is at most H deep.

No final norm in either kind: the features the engine and the teacher pass hand over are the target's last
hidden states AFTER its final norm (what its LM head reads), so the heads feed the LM head directly. Normalising
again would scale by the norm weight twice and break the identity start (all W, b start at zero).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.tree import TreeConfig, TreeProposal, static_tree_shape
from onlinespec.drafts.chain import ChainRecorder
from onlinespec.drafts.head_draft import HeadDraft
from onlinespec.drafts.head_parts import DraftVocab
from onlinespec.drafts.head_protocol import Head
from onlinespec.drafts.tree_builder import TreeBuilder
from onlinespec.errors import UserError


class ResidualBlock(nn.Module):
    """h [..., d] -> h + SiLU(W h + b) [..., d]; zero-initialised, so it starts as the identity."""

    def __init__(self, d: int, d_in: int | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in or d, d)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """x (default h) is what the block reads; h is what it adds to (Hydra reads more than it adds to)."""
        return h + nn.functional.silu(self.linear(h if x is None else x))


def check_layout(num_heads: int, num_layers: int) -> None:
    if num_heads < 1 or num_layers < 1:
        raise UserError(f"a Medusa/Hydra head needs num_heads >= 1 and num_layers >= 1, got {num_heads}, {num_layers}")


class DepthHeads(nn.Module):
    """What Medusa and Hydra share: H heads, head i guessing the token i steps past the next one.

    A kind sets `kind` and `trainable_prefixes`, and makes its trainable modules in `add_heads`."""

    layout_keys: tuple[str, ...] = ("num_heads", "num_layers")  # constructor settings stored in config.json
    trainable_prefixes: tuple[str, ...] = ()  # names of the kind's own (trainable) submodules, with a "."

    def __init__(
        self, target: nn.Module, vocab_ids: torch.Tensor | None = None, num_heads: int = 4, num_layers: int = 1
    ) -> None:
        super().__init__()
        check_layout(num_heads, num_layers)
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.hidden_size = target.config.hidden_size
        self.param_dtype = target.get_output_embeddings().weight.dtype  # the trainable blocks are made in this dtype
        self.vocab = DraftVocab(target.get_output_embeddings(), vocab_ids)
        self.add_heads(target)

    def add_heads(self, target: nn.Module) -> None:
        """Make the kind's trainable modules (in `param_dtype`; blocks start at zero) for this target."""
        raise NotImplementedError

    def trainable_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.startswith(self.trainable_prefixes)]

    def store_config(self) -> dict:
        return {"num_heads": self.num_heads, "num_layers": self.num_layers}

    @property
    def offsets(self) -> tuple[int, ...]:
        """Output i at step t matches the target's p at position t + i + 1 (head i + 1 guesses x_{t+i+2})."""
        return tuple(range(1, self.num_heads + 1))

    @property
    def loss_weights(self) -> tuple[float, ...]:
        return tuple(0.8**i for i in range(self.num_heads))


class DepthHead(Head, Protocol):
    """What DepthHeadsDraft drafts with (MedusaHead, HydraHead): a Head with one output per depth."""

    num_heads: int  # H

    def step_logits(self, feature: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """feature [d] = f_t; paths [N, j] = (x_{t+1}, d_1 .. d_{j-1}) per candidate -> head j's draft logits
        [N, Vd] for the token after each path."""
        ...


class DepthHeadsDraft(HeadDraft):
    """Drafts with a head that has one output per depth (MedusaHead, HydraHead): head j proposes token j.

    The head is a DepthHead: it offers `num_heads`, `vocab` and `step_logits(feature [d], paths [N, j]) -> [N, Vd]`.
    """

    model: DepthHead

    def __init__(self, head: DepthHead, name: str) -> None:
        super().__init__(head, name)
        self.feature: torch.Tensor | None = None  # [d] the newest real target feature, f_{L-2}
        self.position = -1  # its position L-2

    # --- request state --------------------------------------------------------------------------------------
    def begin(self, prompt_ids: torch.Tensor, features: torch.Tensor | None = None) -> None:
        features = self.require_features(features)
        self.feature = features[-1]
        self.position = features.shape[0] - 1

    def commit(self, num_accepted: int, features: torch.Tensor | None = None) -> None:
        """features [num_accepted + 1, d]: the newly committed positions; only the newest one is kept."""
        self.feature = features[-1]
        self.position += features.shape[0]

    def _root(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [L] committed -> the drafting context (x_{L-1},) as a path [1, 1]."""
        if self.position != ids.shape[0] - 2:
            raise RuntimeError(f"{self.name} draft out of step: newest feature at {self.position}, {ids.shape[0]} ids")
        return ids[-1:][None]

    # --- chain ------------------------------------------------------------------------------------------------
    def propose(
        self, ids: torch.Tensor, k: int, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> Proposal:
        """ids [L] committed tokens -> min(k, H) drafted tokens; head j drafts token j."""
        head = self.model
        path = self._root(ids)  # [1, j]
        chain = ChainRecorder(sampling, generator)
        for _ in range(min(k, head.num_heads)):
            step_logits = head.vocab.to_target(head.step_logits(self.feature, path))[0]  # [V]
            token = chain.choose(step_logits)
            path = torch.cat([path, token[None]], dim=1)
        return chain.proposal()

    # --- tree -------------------------------------------------------------------------------------------------
    def propose_tree(self, ids: torch.Tensor, tree: TreeConfig, max_depth: int) -> TreeProposal:
        """A greedy candidate tree (static shape or EAGLE-2 dynamic) of depth <= min(max_depth, H)."""
        builder = _DepthTreeBuilder(self, self._root(ids))
        depth = min(max_depth, self.model.num_heads)
        if tree.kind == "static":
            return builder.static(static_tree_shape(tree.static_nodes, depth))
        return builder.dynamic(depth, tree.top_k, tree.total_tokens)


class _DepthTreeBuilder(TreeBuilder):
    """The children of a depth-j node come from head j + 1, given the path from the root to that node."""

    def __init__(self, draft: DepthHeadsDraft, root: torch.Tensor) -> None:
        super().__init__()
        self.head = draft.model
        self.feature = draft.feature
        self.root = root  # [1, 1] = (x_{L-1},)

    def _path(self, node: int) -> list[int]:
        path = []
        while node >= 0:
            path.append(self.tokens[node])
            node = self.parents[node]
        return path[::-1]

    def _children_logits(self, nodes: list[int]) -> list[torch.Tensor]:
        """One head forward for a whole level: nodes [N] of equal depth -> N logits [V]."""
        drafted = [self._path(n) for n in nodes]
        drafted = torch.tensor(drafted, dtype=torch.long).reshape(len(nodes), len(drafted[0]))
        paths = torch.cat([self.root.expand(len(nodes), -1), drafted], dim=1)  # [N, depth + 1]
        return list(self.head.vocab.to_target(self.head.step_logits(self.feature, paths)))
