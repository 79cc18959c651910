"""Growing a greedy draft tree level by level: a static shape or EAGLE-2's dynamic top-k expansion.

Shared by the head drafts (EAGLE, Medusa, Hydra): a subclass says only how to get the next-token logits of a
level's nodes (`_children_logits`); this class chooses the children and lays out the TreeProposal.
"""

from __future__ import annotations

import torch

from onlinespec.decoding.tree import TreeProposal


class TreeBuilder:
    """Node bookkeeping and the two tree shapes. Nodes are numbered in creation order; -1 is the root (the last
    committed token)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.depth: list[int] = []
        self.score: list[float] = []  # log-probability of the path under the draft
        self.logits_of: list[torch.Tensor] = []  # per node: its parent's full-vocabulary draft logits [V]

    def _children_logits(self, nodes: list[int]) -> list[torch.Tensor]:
        """Expand `nodes` (all of one depth; [-1] = the root): each one's next-token draft logits [V]."""
        raise NotImplementedError

    def _add(self, parent: int, token: int, logits: torch.Tensor, logp: float) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        self.depth.append(1 if parent < 0 else self.depth[parent] + 1)
        self.score.append((self.score[parent] if parent >= 0 else 0.0) + logp)
        self.logits_of.append(logits)
        return len(self.tokens) - 1

    def static(self, shape: list[tuple[int, ...]]) -> TreeProposal:
        """shape: paths of child ranks in breadth-first order (decoding/tree.py: static_tree_shape)."""
        node_of: dict[tuple[int, ...], int] = {(): -1}
        for depth in range(1, max(len(p) for p in shape) + 1):
            level = [p for p in shape if len(p) == depth]
            parents = sorted({node_of[p[:-1]] for p in level})
            for parent, logits in zip(parents, self._children_logits(parents), strict=True):
                logp = logits.float().log_softmax(-1)
                ranked = logits.topk(max(p[-1] for p in level) + 1).indices.tolist()
                for path in (p for p in level if node_of[p[:-1]] == parent):
                    token = ranked[path[-1]]
                    node_of[path] = self._add(parent, token, logits, float(logp[token]))
        return self._proposal(list(range(len(self.tokens))))

    def dynamic(self, max_depth: int, top_k: int, total_tokens: int) -> TreeProposal:
        """EAGLE-2: expand the top_k most probable nodes of each level by their top_k children; keep the
        total_tokens nodes of highest path probability (a parent always outscores its children)."""
        frontier = [-1]
        for _ in range(max_depth):
            level = []
            for parent, logits in zip(frontier, self._children_logits(frontier), strict=True):
                logp = logits.float().log_softmax(-1)
                top = logp.topk(top_k)
                for value, token in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                    level.append(self._add(parent, token, logits, value))
            frontier = sorted(level, key=lambda n: -self.score[n])[:top_k]
        order = sorted(range(len(self.tokens)), key=lambda n: (-self.score[n], self.depth[n]))
        kept: list[int] = []
        chosen: set[int] = set()
        for node in order:
            if len(kept) == total_tokens:
                break
            if self.parents[node] < 0 or self.parents[node] in chosen:
                kept.append(node)
                chosen.add(node)
        return self._proposal(sorted(kept, key=lambda n: (self.depth[n], n)))

    def _proposal(self, nodes: list[int]) -> TreeProposal:
        """Renumber the chosen nodes 0..N-1 in breadth-first order."""
        new_index = {node: i for i, node in enumerate(nodes)}
        return TreeProposal(
            tokens=torch.tensor([self.tokens[n] for n in nodes], dtype=torch.long),
            parents=[new_index[self.parents[n]] if self.parents[n] >= 0 else -1 for n in nodes],
            logits=torch.stack([self.logits_of[n] for n in nodes]),
        )
