"""Tree drafting: many candidate continuations verified in ONE target forward (docs/method.md §3).

A tree proposal is N drafted nodes; node i holds a token and the index of its parent (-1 = the root, which is the
last committed token). The target scores root + nodes in one forward where each node attends to the committed
prefix, its ancestors and itself (the tree attention mask) at position `root_position + depth`. Greedy
verification walks from the root, following the child whose token equals the target's argmax; the target's
argmax at the last node reached is the bonus token. Sampling with trees is refused (see `check_tree_sampling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from onlinespec.errors import UserError

TREE_KINDS = ("chain", "static", "dynamic")


@dataclass(frozen=True)
class TreeConfig:
    """How a draft lays out its candidates. `chain` = k tokens in a line (exact sampling supported).

    static: a fixed shape of `static_nodes` nodes (default the 25-node, depth-5 shape of EAGLE-1).
    dynamic: EAGLE-2 style: grow `depth` levels, expanding the `top_k` most probable frontier nodes by their
    `top_k` best children, then keep the `total_tokens` nodes with the highest path probability.
    """

    kind: str = "chain"
    depth: int = 5
    top_k: int = 4
    total_tokens: int = 24
    static_nodes: int = 25

    def __post_init__(self) -> None:
        if self.kind not in TREE_KINDS:
            raise UserError(f"unknown tree '{self.kind}': choose one of {', '.join(TREE_KINDS)}")
        if min(self.depth, self.top_k, self.total_tokens, self.static_nodes) < 1:
            raise UserError("tree depth, top-k, total tokens and static nodes must all be >= 1")


def check_tree_sampling(tree: TreeConfig, greedy: bool) -> None:
    """We ship no inexact sampler: trees verify greedily only."""
    if tree.kind != "chain" and not greedy:
        raise UserError(
            f"a {tree.kind} tree verifies greedy decoding only (exact multi-candidate sampling is not implemented): "
            "use --temperature 0, or --tree chain to sample"
        )


@dataclass
class TreeProposal:
    """N drafted nodes in breadth-first order (a parent always precedes its children). V = target vocab."""

    tokens: torch.Tensor  # LongTensor [N]
    parents: list[int]  # parent node index per node, -1 = root (the last committed token)
    logits: torch.Tensor  # [N, V] draft logits each node's token was chosen from (its parent's distribution)

    @property
    def depths(self) -> list[int]:
        out: list[int] = []
        for p in self.parents:
            out.append(1 if p < 0 else out[p] + 1)
        return out


# Assumed acceptance of a draft's r-th ranked child (r = 0, 1, ...). It only orders nodes to build the static
# shape: the product along a path ranks how likely the whole path is to be accepted.
_RANK_ACCEPT = (0.65, 0.2, 0.08, 0.04)


def static_tree_shape(nodes: int = 25, max_depth: int = 5) -> list[tuple[int, ...]]:
    """The `nodes` paths (tuples of child ranks) with the highest assumed acceptance, depth <= max_depth.

    With the defaults this gives 25 nodes, depth 5, branching 4, 3, 2, ... along the top path (docs/method.md §3).
    Every prefix of a chosen path is chosen too, because extending a path only lowers its score.
    """
    scored: list[tuple[float, tuple[int, ...]]] = []
    frontier: list[tuple[int, ...]] = [()]
    while frontier:
        path = frontier.pop()
        if len(path) == max_depth:
            continue
        for rank in range(len(_RANK_ACCEPT)):
            child = (*path, rank)
            score = math.prod(_RANK_ACCEPT[r] for r in child)
            if score >= 1e-6:
                scored.append((score, child))
                frontier.append(child)
    scored.sort(key=lambda item: (-item[0], len(item[1]), item[1]))
    chosen = [path for _, path in scored[:nodes]]
    return sorted(chosen, key=lambda p: (len(p), p))


def ancestor_mask(parents: list[int], include_root: bool) -> torch.Tensor:
    """Bool [M, M]: node i may attend to node j (j is i or an ancestor of i).

    include_root: prepend the root as row/column 0 (every node attends to it), as in the target's verify pass.
    """
    offset = 1 if include_root else 0
    m = len(parents) + offset
    mask = torch.zeros(m, m, dtype=torch.bool)
    if include_root:
        mask[0, 0] = True
    for i, parent in enumerate(parents):
        row = i + offset
        mask[row, row] = True
        if parent >= 0:
            mask[row] |= mask[parent + offset]
        elif include_root:
            mask[row, 0] = True
    return mask


def additive_mask(visible: torch.Tensor, past: int, dtype: torch.dtype) -> torch.Tensor:
    """visible: bool [q, q] among the new positions -> float [1, 1, q, past + q] (0 = attend, -inf = not).

    Every new position sees all `past` cached positions. Float masks work for both eager and SDPA attention.
    """
    q = visible.shape[0]
    full = torch.cat([torch.ones(q, past, dtype=torch.bool), visible], dim=1)
    mask = torch.zeros(q, past + q, dtype=dtype)
    mask.masked_fill_(~full, torch.finfo(dtype).min)
    return mask[None, None]


def top_path(tree: TreeProposal) -> torch.Tensor:
    """The tokens of the tree's most probable chain: from the root, the child the draft ranked highest at every
    node (siblings share their parent's distribution, so their logits compare). LongTensor [depth of that path]."""
    score = tree.logits.gather(1, tree.tokens[:, None])[:, 0].tolist()  # each node's logit, one gather
    best: dict[int, int] = {}  # parent -> its most probable child
    for i, parent in enumerate(tree.parents):
        if parent not in best or score[i] > score[best[parent]]:
            best[parent] = i
    path, node = [], best.get(-1)
    while node is not None:
        path.append(node)
        node = best.get(node)
    return tree.tokens[path]


def greedy_tree_walk(target_logits: torch.Tensor, tokens: torch.Tensor, parents: list[int]) -> tuple[list[int], int]:
    """target_logits [N+1, V] at root + nodes. Returns (accepted node indices from the root down, bonus token)."""
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parents):
        children.setdefault(p, []).append(i)
    choice = target_logits.argmax(dim=-1).tolist()  # the target's greedy token after root (row 0) / node i (row i+1)
    node_tokens = tokens.tolist()  # one conversion, not a tensor index per candidate
    path: list[int] = []
    current = -1
    while True:
        want = choice[current + 1]
        match = next((c for c in children.get(current, []) if node_tokens[c] == want), None)
        if match is None:
            return path, want
        path.append(match)
        current = match


def compact_cache(cache: DynamicCache, start: int, keep: list[int]) -> None:
    """Keep cached positions [0, start) plus, in order, the positions `start + j` for j in `keep`; drop the rest.

    After a tree verify the cache holds the committed prefix then every node; this leaves the accepted path only.
    """
    index = torch.tensor([start + j for j in keep], dtype=torch.long)
    for layer in cache.layers:
        if index.numel():
            layer.keys[..., start : start + index.numel(), :] = layer.keys[..., index, :]
            layer.values[..., start : start + index.numel(), :] = layer.values[..., index, :]
        layer.keys = layer.keys[..., : start + index.numel(), :]
        layer.values = layer.values[..., : start + index.numel(), :]
