"""Tree settings and the static tree's shape, by hand (mutation testing found these unchecked, docs/testing.md)."""

from __future__ import annotations

import pytest
import torch

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.tree import TreeConfig, TreeProposal, ancestor_mask, static_tree_shape
from onlinespec.errors import UserError

SIZES = ("depth", "top_k", "total_tokens", "static_nodes")


@pytest.mark.parametrize("field", SIZES)
def test_each_tree_size_must_be_at_least_one(field: str) -> None:
    assert getattr(TreeConfig(kind="dynamic", **{field: 1}), field) == 1
    with pytest.raises(UserError, match="tree depth, top-k, total tokens and static nodes must all be >= 1"):
        TreeConfig(kind="dynamic", **{field: 0})


def test_tree_defaults_and_kinds() -> None:
    assert TreeConfig() == TreeConfig("chain", depth=5, top_k=4, total_tokens=24, static_nodes=25)
    with pytest.raises(UserError, match="unknown tree 'beam': choose one of chain, static, dynamic"):
        TreeConfig(kind="beam")


def test_trees_verify_greedy_decoding_only() -> None:
    sampled = SamplingConfig(temperature=0.7)
    assert GenerationConfig(sampling=sampled).tree.kind == "chain"  # chains sample exactly
    for kind in ("static", "dynamic"):
        with pytest.raises(UserError, match=f"a {kind} tree verifies greedy decoding only"):
            GenerationConfig(sampling=sampled, tree=TreeConfig(kind))


def test_static_shape_keeps_the_paths_most_likely_to_be_accepted() -> None:
    # Path scores are products of (0.65, 0.2, 0.08, 0.04) by child rank: 0.65, 0.4225, 0.2746 (= 0.65^3) and 0.2
    # beat 0.65^4 = 0.1785; with depth <= 2, (0, 1) and (1, 0) tie at 0.13 and both beat (2,) at 0.08.
    assert static_tree_shape(4, 5) == [(0,), (1,), (0, 0), (0, 0, 0)]
    assert static_tree_shape(5, 2) == [(0,), (1,), (0, 0), (0, 1), (1, 0)]


def test_default_static_shape_is_eagles_25_nodes_of_depth_5() -> None:
    shape = static_tree_shape()
    assert shape == [
        *[(0,), (1,), (2,), (3,)],
        *[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)],
        *[(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)],
        *[(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0, 0), (1, 0, 0, 0)],
        *[(0, 0, 0, 0, 0), (0, 0, 0, 0, 1), (0, 0, 0, 1, 0), (0, 0, 1, 0, 0), (0, 1, 0, 0, 0), (1, 0, 0, 0, 0)],
    ]


def test_node_depths_follow_the_parents() -> None:
    proposal = TreeProposal(torch.zeros(5, dtype=torch.long), [-1, -1, 0, 2, 1], torch.zeros(5, 3))
    assert proposal.depths == [1, 1, 2, 3, 2]


def test_ancestor_masks_with_and_without_the_root_by_hand() -> None:
    parents = [-1, 0, 0, 1]  # root -> 0 -> (1 -> 3, 2)
    nodes = [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]
    assert ancestor_mask(parents, include_root=False).int().tolist() == nodes
    with_root = [[1, 0, 0, 0, 0]] + [[1, *row] for row in nodes]
    assert ancestor_mask(parents, include_root=True).int().tolist() == with_root
