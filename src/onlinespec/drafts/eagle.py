"""EAGLE-style draft head (docs/method.md §3) and the draft that decodes with it, as a chain or a tree.

Head step at position t: concat(f_t, e(x_{t+1})) [2d] -> fc -> one decoder layer of the target's family -> the
target's frozen final norm + LM head -> a distribution over x_{t+2}. f_t is the target's last-layer feature at
t for committed positions, and the head's own output g_t (its guess of f_{t+1}) while drafting ahead.

Layout "eagle1" (opt-in) computes exactly what EAGLE-1 heads compute in vLLM and SGLang: the decoder layer has no
input norm and the LM head reads g directly, with no final norm (see onlinespec/export/eagle.py); only such heads export
exactly to those engines.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.kv_cache import rollback
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.tree import TreeConfig, TreeProposal, additive_mask, static_tree_shape
from onlinespec.drafts.chain import ChainRecorder
from onlinespec.drafts.head_draft import HeadDraft
from onlinespec.drafts.head_parts import DraftVocab, causal_mask, decoder_of, init_linear_weights
from onlinespec.drafts.tree_builder import TreeBuilder


class UnrolledFeatureHead(nn.Module):
    """What EAGLE heads of every generation share: the head steps over `lift(features)` and next tokens, each step
    outputs g (its guess of the next feature, pre-norm), and training unrolls it on its own outputs.

    Subclasses define `lift` (the target's features [..., F] -> the head's input [..., d]), `step` and
    `draft_logits`, and set `unroll` (>= 1) in their constructor.
    """

    unroll: int
    feature_layers: tuple[int, ...] = (-1,)  # the target's hidden states the engine passes (-1: the last, normed)

    def lift(self, features: torch.Tensor) -> torch.Tensor:
        """The target's features [..., F] -> the head's step input [..., d] (EAGLE: unchanged)."""
        return features

    @property
    def offsets(self) -> tuple[int, ...]:
        """Output i at step t matches the target's p at position t + offsets[i] (every pass predicts x_{t+2})."""
        return self.unrolled_terms(self.unroll)[0]

    @property
    def loss_weights(self) -> tuple[float, ...]:
        return self.unrolled_terms(self.unroll)[1]

    @staticmethod
    def unrolled_terms(unroll: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """(offsets, loss weights) of a teacher-forced call with `unroll` passes: (1,) * n and 0.8^i."""
        return (1,) * unroll, tuple(0.8**i for i in range(unroll))

    def forward(self, features: torch.Tensor, next_ids: torch.Tensor, unroll: int | None = None) -> list[torch.Tensor]:
        """Teacher-forced training pass. features [B, T, F] = the target's f_0..f_{T-1}; next_ids [B, T] = x_1..x_T.

        Returns `unroll` (default: self.unroll) tensors [B, T, Vd]: row t predicts x_{t+2}, i.e. matches the target's
        p at t + 1.
        """
        length = features.shape[1]
        positions = torch.arange(length, device=features.device)[None].expand(features.shape[0], -1)
        mask = causal_mask(length, features.dtype, features.device)
        inputs = self.lift(features)
        outputs = []
        for _ in range(self.unroll if unroll is None else unroll):
            hidden = self.step(inputs, next_ids, positions, mask=mask)
            outputs.append(self.draft_logits(hidden))
            # next pass: step t sees the head's own estimate g_{t-1} of its input at t (step 0 keeps the real one)
            inputs = torch.cat([inputs[:, :1], hidden[:, :-1]], dim=1)
        return outputs


class EagleHead(UnrolledFeatureHead):
    """Trainable: `fc` and `layer`. Shared with the target and frozen: embed, norm, rotary, the LM head."""

    kind = "eagle"
    layout_keys: tuple[str, ...] = ("layout", "unroll")  # constructor settings stored in config.json
    LAYOUTS = ("onlinespec", "eagle1")

    def __init__(
        self, target: nn.Module, vocab_ids: torch.Tensor | None = None, layout: str = "onlinespec", unroll: int = 1
    ) -> None:
        super().__init__()
        if layout not in self.LAYOUTS:
            raise ValueError(f"unknown EAGLE head layout '{layout}': choose one of {', '.join(self.LAYOUTS)}")
        if unroll < 1:
            raise ValueError(f"an EAGLE head's unroll must be >= 1, got {unroll}")
        self.layout = layout
        # Training-time unrolling (EAGLE-3's "training-time test"): pass i > 0 feeds the head its own outputs of
        # pass i-1 as features, as drafting ahead does; pass i's loss is weighted 0.8^i. Warm-up sets it and it is
        # stored in config.json (heads saved before it was stored load with 1); online learning trains each request
        # with the k it drafted with instead (online/session.py OnlineConfig.unroll).
        self.unroll = unroll
        config = target.config
        base = decoder_of(target)
        d = config.hidden_size
        self.fc = nn.Linear(2 * d, d, bias=False)
        self.layer = type(base.layers[0])(config, layer_idx=0)
        if layout == "eagle1":
            self.layer.input_layernorm = nn.Identity()  # EAGLE-1 skips the first layer's input norm
        init_linear_weights(self, getattr(config, "initializer_range", 0.02))
        self.layer.to(dtype=base.norm.weight.dtype)
        self.fc.to(dtype=base.norm.weight.dtype)
        self.embed = target.get_input_embeddings()
        self.norm = base.norm if layout == "onlinespec" else nn.Identity()  # EAGLE-1: g goes to the LM head as is
        self.rotary = base.rotary_emb
        self.vocab = DraftVocab(target.get_output_embeddings(), vocab_ids)

    def trainable_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.startswith(("fc.", "layer."))]

    def store_config(self) -> dict:
        """Layout settings saved beside the weights (drafts/head_store.py)."""
        return {"layout": self.layout, "unroll": self.unroll}

    def step(self, features, next_ids, positions, cache=None, mask=None) -> torch.Tensor:
        """features [B, q, d], next_ids [B, q], positions [B, q] -> head outputs g [B, q, d] (pre-norm)."""
        with torch.no_grad():
            embedded = self.embed(next_ids)  # frozen: no gradient flows into the target's embeddings
        x = self.fc(torch.cat([features, embedded], dim=-1))
        return self.layer(
            x,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
            position_embeddings=self.rotary(x, positions),
        )

    def draft_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """g [..., d] -> logits [..., Vd] over the draft vocabulary."""
        return self.vocab.logits(self.norm(hidden))


class EagleDraft(HeadDraft):
    """Drafts with an EagleHead (or an Eagle3Head, drafts/eagle3.py) and its own small KV cache.

    The cache holds the head's entries for committed positions 0..fed-1 (fed with the target's real features);
    entries drafted ahead are dropped at every commit, and the next propose first feeds the real features the
    verify pass produced (`pending`).
    """

    def __init__(self, head: EagleHead, name: str) -> None:
        super().__init__(head, name)
        self.cache: DynamicCache | None = None
        self.fed = 0
        self.pending: torch.Tensor | None = None  # [m, d] real features of positions fed .. fed+m-1

    # --- request state --------------------------------------------------------------------------------------
    def begin(self, prompt_ids: torch.Tensor, features: torch.Tensor | None = None) -> None:
        self.cache = DynamicCache()
        self.fed = 0
        self.pending = self.require_features(features)

    def commit(self, num_accepted: int, features: torch.Tensor | None = None) -> None:
        rollback(self.cache, self.fed)  # drop everything drafted ahead: real features replace it
        self.pending = features if self.pending is None else torch.cat([self.pending, features])

    def _feed_pending(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed (f_t, x_{t+1}) for every pending real feature; returns g of the newest position, [d]."""
        m = self.pending.shape[0]
        if self.fed + m != ids.shape[0] - 1:
            raise RuntimeError(f"EAGLE draft out of step: {self.fed}+{m} features for {ids.shape[0]} tokens")
        t = torch.arange(self.fed, self.fed + m)
        mask = None
        if m > 1:
            mask = additive_mask(torch.ones(m, m, dtype=torch.bool).tril(), self.fed, self.pending.dtype)
        hidden = self.model.step(self.model.lift(self.pending[None]), ids[t + 1][None], t[None], self.cache, mask)
        self.fed += m
        self.pending = None
        return hidden[0, -1]

    # --- chain ------------------------------------------------------------------------------------------------
    def propose(
        self, ids: torch.Tensor, k: int, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> Proposal:
        """ids [L] committed tokens -> k drafted tokens, each from the head's own previous output."""
        head = self.model
        hidden = self._feed_pending(ids)
        position = ids.shape[0] - 1
        chain = ChainRecorder(sampling, generator)
        for i in range(k):
            step_logits = head.vocab.to_target(head.draft_logits(hidden))  # [V]
            token = chain.choose(step_logits)
            if i < k - 1:
                hidden = head.step(hidden[None, None], token[None], torch.tensor([[position + i]]), self.cache)[0, -1]
        return chain.proposal()

    # --- tree -------------------------------------------------------------------------------------------------
    def propose_tree(self, ids: torch.Tensor, tree: TreeConfig, max_depth: int) -> TreeProposal:
        """A greedy candidate tree (static shape or EAGLE-2 dynamic), drafted one depth level per head forward."""
        builder = _TreeBuilder(self, ids)
        if tree.kind == "static":
            return builder.static(static_tree_shape(tree.static_nodes, max_depth))
        return builder.dynamic(max_depth, tree.top_k, tree.total_tokens)


class _TreeBuilder(TreeBuilder):
    """Grows a draft tree level by level; each level's expanded nodes go through the head in one forward, each
    attending to the committed cache entries, its ancestors and itself."""

    def __init__(self, draft: EagleDraft, ids: torch.Tensor) -> None:
        super().__init__()
        self.draft = draft
        self.head = draft.model
        self.root_hidden = draft._feed_pending(ids)
        self.root_position = ids.shape[0] - 1  # position of the first drafted token
        self.slot: dict[int, int] = {}  # node -> its index in the head's cache, once expanded
        self.hidden: dict[int, torch.Tensor] = {}

    def _children_logits(self, nodes: list[int]) -> list[torch.Tensor]:
        """Expand `nodes` (-1 = root): run them through the head, return each one's next-token logits [V]."""
        if nodes == [-1]:
            return [self.head.vocab.to_target(self.head.draft_logits(self.root_hidden))]
        cache = self.draft.cache
        past = cache.get_seq_length()
        visible = torch.zeros(len(nodes), past + len(nodes), dtype=torch.bool)
        visible[:, : self.draft.fed] = True
        for row, node in enumerate(nodes):
            visible[row, past + row] = True
            ancestor = self.parents[node]
            while ancestor >= 0:
                visible[row, self.slot[ancestor]] = True
                ancestor = self.parents[ancestor]
        features = torch.stack([self.hidden.get(self.parents[n], self.root_hidden) for n in nodes])
        tokens = torch.tensor([self.tokens[n] for n in nodes])
        positions = torch.tensor([self.root_position + self.depth[n] - 1 for n in nodes])
        dtype = features.dtype
        mask = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)[None, None]
        out = self.head.step(features[None], tokens[None], positions[None], cache, mask)[0]  # [q, d]
        for row, node in enumerate(nodes):
            self.slot[node] = past + row
            self.hidden[node] = out[row]
        return list(self.head.vocab.to_target(self.head.draft_logits(out)))
