"""The one protocol every draft kind implements, owned by the engine that calls it (docs/architecture.md, "The seams").

The engine talks to a draft only through `Draft` and reads only the `Proposal` it returns (tree drafts return a
`TreeProposal`, decoding/tree.py). Draft kinds live in `onlinespec.drafts`; nothing here imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.tree import TreeConfig, TreeProposal


@dataclass
class Proposal:
    """k drafted tokens and the draft distributions they were chosen from (V = the TARGET's vocabulary size)."""

    tokens: torch.Tensor  # LongTensor [k]
    logits: torch.Tensor  # [k, V] raw draft logits (ids the draft cannot produce hold -inf)
    probs: torch.Tensor | None  # [k, V] q after the request's logits processing; None when greedy
    # Which part of the draft proposed it (a hybrid's "request", "shared" or "head"): the engine keeps the acceptance
    # rates that its verify-cost rule reads per source (decoding/verify_cost.py). "" for drafts with one source.
    source: str = ""


class Draft(Protocol):
    """A proposer of k tokens that keeps its own state across the steps of one request."""

    name: str
    wants_target_hidden: bool  # the draft drafts from the target's last-layer features (EAGLE, Medusa, Hydra)
    supports_tree: bool  # implements propose_tree
    # Optional (default (-1,)): which of the target's hidden states (transformers' `hidden_states` indices: i < L is
    # the input of layer i, -1 the last layer's output after the final norm) make a position's features, in this
    # order, concatenated: d * len(feature_layers) columns. EAGLE-3 reads three inner layers and the last.
    feature_layers: tuple[int, ...]

    def begin(self, prompt_ids: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """Start a new request. prompt_ids: LongTensor [T]; features [T, F] (only if wants_target_hidden;
        F = d * len(feature_layers))."""

    def propose(
        self, ids: torch.Tensor, k: int, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> Proposal:
        """Draft k tokens continuing the committed sequence ids: LongTensor [L]. A draft that cannot look k
        tokens ahead (Medusa/Hydra with H < k heads) proposes fewer; the engine verifies what it gets."""

    def propose_tree(self, ids: torch.Tensor, tree: TreeConfig, max_depth: int) -> TreeProposal | Proposal:
        """Draft a greedy candidate tree (decoding/tree.py) of depth <= max_depth continuing ids [L]. A draft with
        several sources may answer with a chain of <= max_depth tokens on a step where one source's chain is its
        guess (the hybrid's lookup match); the engine then verifies it as a chain."""

    def commit(self, num_accepted: int, features: torch.Tensor | None = None) -> None:
        """The target accepted `num_accepted` drafted tokens (along the chain, or a tree path); roll internal
        state back to match. features [num_accepted + 1, F]: the target's features of the newly committed
        positions that have one (only if wants_target_hidden)."""
