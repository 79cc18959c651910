"""EAGLE drafts from correctly aligned inputs: at every verify step, what the draft proposes equals the head run
teacher-forced over the committed inputs (feature f_t of the target paired with token x_{t+1}), and the head's KV
cache for the committed positions equals a fresh prefill over those same inputs.

Greedy equality cannot see a misalignment (verification keeps the output exact whatever the draft proposes), and
acceptance only drops: these checks recompute the draft's own numbers instead.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from test_eagle import own_text
from transformers import DynamicCache

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.decoding.tree import TreeConfig
from onlinespec.drafts.eagle import EagleDraft
from onlinespec.drafts.head_parts import causal_mask
from onlinespec.drafts.heads import build_head
from onlinespec.warmup.distill import batch_loss
from onlinespec.warmup.teacher import teacher_pass

ATOL, RTOL = 1e-4, 1e-4


def teacher_forced(head, features: torch.Tensor, ids: torch.Tensor, cache=None) -> torch.Tensor:
    """features [m, d] = f_0..f_{m-1}, ids [m + 1] = x_0..x_m -> head outputs g [m, d] for steps (f_t, x_{t+1})."""
    m = features.shape[0]
    positions = torch.arange(m)[None]
    return head.step(features[None], ids[1 : m + 1][None], positions, cache, causal_mask(m, features.dtype))[0]


def reference_chain(head, features: torch.Tensor, ids: torch.Tensor, drafted: torch.Tensor) -> torch.Tensor:
    """The logits [k, V] the head should give for each drafted token, recomputed without a KV cache: committed
    steps use the target's features, each step drafted ahead uses the head's own previous output g."""
    feats, tokens, logits = features, ids, []
    for i in range(drafted.shape[0]):
        g = teacher_forced(head, feats, tokens)[-1]
        logits.append(head.vocab.to_target(head.draft_logits(g)))
        feats, tokens = torch.cat([feats, g[None]]), torch.cat([tokens, drafted[i : i + 1]])
    return torch.stack(logits)


def assert_cache_is_a_fresh_prefill(draft: EagleDraft, features: torch.Tensor, ids: torch.Tensor) -> None:
    """The head's cache entries of committed positions 0..m-1 equal a prefill of (f_t, x_{t+1}), t < m."""
    m = features.shape[0]
    assert draft.fed == m
    fresh = DynamicCache()
    teacher_forced(draft.model, features, ids, fresh)
    assert draft.cache.get_seq_length() >= m
    for layer, ref in zip(draft.cache.layers, fresh.layers, strict=True):
        torch.testing.assert_close(layer.keys[..., :m, :], ref.keys, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(layer.values[..., :m, :], ref.values, atol=ATOL, rtol=RTOL)


class CheckedEagle(EagleDraft):
    """An EagleDraft that checks each proposal against the teacher-forced head and the committed inputs, which it
    reads from the engine (its features of committed positions) and from the ids it is given."""

    engine: SpeculativeEngine

    def __init__(self, head, name: str) -> None:
        super().__init__(head, name)
        self.checked = 0
        self.multi_token_commits = 0

    def commit(self, num_accepted: int, features: torch.Tensor | None = None) -> None:
        self.multi_token_commits += num_accepted > 0
        super().commit(num_accepted, features)

    def propose(self, ids, k, sampling, generator):
        proposal = super().propose(ids, k, sampling, generator)
        committed = self.engine.features[: ids.shape[0] - 1]  # features of every committed position but the last
        expected = reference_chain(self.model, committed, ids, proposal.tokens)
        torch.testing.assert_close(proposal.logits, expected, atol=ATOL, rtol=RTOL)
        assert_cache_is_a_fresh_prefill(self, committed, ids)
        self.checked += 1
        return proposal

    def propose_tree(self, ids, tree, max_depth):
        proposal = super().propose_tree(ids, tree, max_depth)
        committed = self.engine.features[: ids.shape[0] - 1]
        assert_cache_is_a_fresh_prefill(self, committed, ids)
        root = self.model.vocab.to_target(self.model.draft_logits(teacher_forced(self.model, committed, ids)[-1]))
        first_level = [i for i, p in enumerate(proposal.parents) if p == -1]
        torch.testing.assert_close(
            proposal.logits[first_level], root.expand(len(first_level), -1), atol=ATOL, rtol=RTOL
        )
        self.checked += 1
        return proposal


def run_checked(target, head, prompt: torch.Tensor, cfg: GenerationConfig) -> CheckedEagle:
    draft = CheckedEagle(head, "eagle")
    engine = draft.engine = SpeculativeEngine(target, draft)
    stop, stats = StopCriteria(cfg.max_new_tokens, frozenset()), RequestStats()
    for _ in engine.stream(prompt, cfg, stop, stats):
        pass
    return draft


@pytest.fixture(scope="module")
def setup():
    """A tiny target, an EAGLE head briefly distilled on its text (so drafts get accepted), and one such prompt."""
    target = tiny_llama(seed=42)
    text = own_text(target, n=2)
    torch.manual_seed(0)
    head = build_head("eagle", target)
    batch = teacher_pass(target, text, top_k=16, pad_id=0)
    optimizer = torch.optim.AdamW([dict(head.named_parameters())[n] for n in head.trainable_names()], lr=3e-3)
    for _ in range(40):
        batch_loss(head, batch)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
    return target, head.eval(), torch.tensor(text[0][:6])


def test_every_chain_proposal_equals_the_teacher_forced_head(setup) -> None:
    target, head, prompt = setup
    for sampling, k in ((SamplingConfig(), 3), (SamplingConfig(), 5), (SamplingConfig(temperature=1.0), 3)):
        draft = run_checked(target, head, prompt, GenerationConfig(max_new_tokens=30, k=k, sampling=sampling, seed=1))
        assert draft.checked >= 5
        assert draft.multi_token_commits > 0  # steps that accepted drafts (several features committed at once)


def test_tree_drafts_start_from_the_teacher_forced_head(setup) -> None:
    target, head, prompt = setup
    for tree in (TreeConfig(kind="static"), TreeConfig(kind="dynamic", depth=4, top_k=3, total_tokens=12)):
        draft = run_checked(target, head, prompt, GenerationConfig(max_new_tokens=30, tree=tree))
        assert draft.checked >= 3 and draft.multi_token_commits > 0
