"""The speculative decoding loop: draft k tokens, verify them in ONE target forward, keep the accepted prefix
plus one target token, roll both KV caches back to the accepted length (docs/method.md §1).

The engine knows nothing about learning: it hands a FeedbackRecord of every verify step to its listeners.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from onlinespec.decoding.autoregressive import choose_token
from onlinespec.decoding.config import DEFAULT_K, GenerationConfig
from onlinespec.decoding.draft import Draft, Proposal
from onlinespec.decoding.feedback import FeedbackListener, FeedbackRecord
from onlinespec.decoding.kv_cache import new_cache, rollback
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.sampling import probs_from_logits
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.decoding.tree import additive_mask, ancestor_mask, compact_cache, greedy_tree_walk
from onlinespec.decoding.verify import verify_greedy, verify_sampling
from onlinespec.decoding.verify_cost import SourceAcceptance, VerifyCost, cut_proposal
from onlinespec.errors import UserError


class SpeculativeEngine:
    """Batch-1 speculative decoding of `target` with `draft`: chain drafting, or a greedy draft tree."""

    def __init__(self, target: torch.nn.Module, draft: Draft) -> None:
        self.target = target
        self.draft = draft
        self.listeners: list[FeedbackListener] = []
        self.target_cache = None  # the current request's target KV cache (holds all committed tokens but the last)
        self.features: torch.Tensor | None = None  # [max_len, F] target features of committed positions
        self._request_id = 0
        # When set, each chain proposal is cut to the length worth its verify cost (decoding/verify_cost.py).
        self.verify_cost: VerifyCost | None = None
        self.acceptance = SourceAcceptance()  # per-source, per-depth acceptance of earlier steps: caps the draft's q
        # The rates the current request's cuts read: the shared memory when greedy (cuts cannot change a greedy
        # output), the request's own when sampling, so that a seed reproduces a sample whatever came before
        # (the cut length decides which random draws each token gets).
        self.request_acceptance = self.acceptance

    def add_listener(self, listener: FeedbackListener) -> None:
        self.listeners.append(listener)

    def _target_forward(self, input_ids: torch.Tensor, cache, logits_to_keep: int = 0, **tree_inputs):
        """input_ids [n] -> model output; hidden states only for drafts that draft from the target's features."""
        return self.target(
            input_ids=input_ids[None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=logits_to_keep,
            output_hidden_states=self.draft.wants_target_hidden,
            **tree_inputs,
        )

    def chain_length(self, cfg: GenerationConfig) -> int:
        """k for a chain: the request's, else the draft's own default (`default_k`, set by drafts/registry.py
        make_draft from its kind; DEFAULT_K for a draft built without it)."""
        return cfg.k if cfg.k is not None else getattr(self.draft, "default_k", DEFAULT_K)

    @torch.inference_mode()
    def stream(
        self, prompt_ids: torch.Tensor, cfg: GenerationConfig, stop: StopCriteria, stats: RequestStats
    ) -> Iterator[list[int]]:
        """prompt_ids: LongTensor [T]. Yields the new token ids of each target forward (1..k+1 of them)."""
        if cfg.tree.kind != "chain" and not getattr(self.draft, "supports_tree", False):
            raise UserError(
                f"draft '{self.draft.name}' drafts chains only: use --tree chain, or a head draft (eagle, ...)"
            )
        resumed = time.perf_counter()  # time spent by the caller between yields is not ours
        self._request_id += 1
        generator = cfg.generator()
        self.request_acceptance = self.acceptance if generator is None else SourceAcceptance()
        stats.prompt_tokens = prompt_ids.shape[0]
        ids = torch.empty(prompt_ids.shape[0] + cfg.max_new_tokens + 1, dtype=torch.long)
        ids[: prompt_ids.shape[0]] = prompt_ids
        length = prompt_ids.shape[0]  # committed tokens; the target cache holds all but the last one

        # Prefill: the target's prompt pass already yields the first new token.
        cache = self.target_cache = new_cache(self.target)
        tic = time.perf_counter()
        out = self._target_forward(prompt_ids, cache, logits_to_keep=1)
        first = choose_token(out.logits[0, -1], cfg, generator)
        stats.target_s += time.perf_counter() - tic
        stats.target_forwards += 1
        # Target last-layer features of the committed positions, for drafts that draft from them (EAGLE & co).
        self.features = None
        prompt_features = None
        if self.draft.wants_target_hidden:
            prompt_features = self._features_of(out)  # [T, F]
            self.features = prompt_features.new_empty(ids.shape[0], prompt_features.shape[-1])
            self.features[: prompt_ids.shape[0]] = prompt_features
        self.draft.begin(prompt_ids, prompt_features)
        ids[length] = first
        length += 1
        emitted = stop.extend([int(first)])
        stats.new_tokens += len(emitted)
        stats.wall_s += time.perf_counter() - resumed
        yield emitted
        resumed = time.perf_counter()

        step = 0
        while not stop.finished:
            tree = cfg.tree.kind != "chain"
            k = min(cfg.tree.depth if tree else self.chain_length(cfg), stop.remaining - 1)  # never past the budget
            if k == 0:
                new_ids = self._plain_step(ids, length, cache, cfg, generator, stats)
            elif tree:
                new_ids = self._tree_step(ids, length, k, cache, cfg, stats, step)
            else:
                new_ids = self._speculative_step(ids, length, k, cache, cfg, generator, stats, step)
            step += 1
            ids[length : length + len(new_ids)] = torch.tensor(new_ids)
            length += len(new_ids)
            emitted = stop.extend(new_ids)
            stats.new_tokens += len(emitted)
            stats.wall_s += time.perf_counter() - resumed
            yield emitted
            resumed = time.perf_counter()

    def _plain_step(self, ids, length, cache, cfg, generator, stats: RequestStats) -> list[int]:
        tic = time.perf_counter()
        out = self._target_forward(ids[length - 1 : length], cache)
        token = choose_token(out.logits[0, -1], cfg, generator)
        self._commit_features(out, length, [0])
        self.draft.commit(0, None if self.features is None else self.features[length - 1 : length])
        stats.target_s += time.perf_counter() - tic
        stats.target_forwards += 1
        return [int(token)]

    def _speculative_step(self, ids, length, k, cache, cfg, generator, stats: RequestStats, step: int) -> list[int]:
        tic = time.perf_counter()
        proposal = self.draft.propose(ids[:length], k, cfg.sampling, generator)
        return self._verify_chain(proposal, tic, ids, length, cache, cfg, generator, stats, step)

    def _verify_chain(
        self, proposal: Proposal, tic: float, ids, length, cache, cfg, generator, stats: RequestStats, step: int
    ) -> list[int]:
        """Verify a drafted chain (drafted since `tic`) in one target forward; returns the committed new ids."""
        if self.verify_cost is not None:
            proposal = cut_proposal(proposal, self.verify_cost, self.request_acceptance.of(proposal.source))
        toc = time.perf_counter()
        stats.draft_s += toc - tic

        # One target forward over [last committed token, d_1 .. d_k] scores all k drafts plus the bonus position.
        out = self._target_forward(torch.cat([ids[length - 1 : length], proposal.tokens]), cache)
        target_logits = out.logits[0]  # [k+1, V]
        target_probs = None
        if cfg.sampling.greedy:
            n_accepted, next_token = verify_greedy(target_logits, proposal.tokens)
        else:
            target_probs = probs_from_logits(target_logits, cfg.sampling)
            n_accepted, next_token = verify_sampling(target_probs, proposal.probs, proposal.tokens, generator)
        n = int(n_accepted)
        self.acceptance.observe(proposal.tokens.shape[0], n, proposal.source)
        if self.request_acceptance is not self.acceptance:
            self.request_acceptance.observe(proposal.tokens.shape[0], n, proposal.source)
        # The cache now holds length + k positions; keep the committed ones and the accepted drafts.
        rollback(cache, length + n)
        self._commit_features(out, length, list(range(n + 1)))
        self.draft.commit(n, None if self.features is None else self.features[length - 1 : length + n])
        stats.target_s += time.perf_counter() - toc
        stats.target_forwards += 1
        stats.count_step(proposal.tokens.shape[0], n)  # a draft with H heads proposes min(k, H)

        if self.listeners:
            record = FeedbackRecord(
                request_id=self._request_id,
                step=step,
                first_position=length - 1,
                context_ids=torch.cat([ids[:length], proposal.tokens]),
                draft_tokens=proposal.tokens,
                target_logits=target_logits,
                draft_logits=proposal.logits,
                target_probs=target_probs,
                draft_probs=proposal.probs,
                num_accepted=n,
                target_hidden_states=tuple(h[0] for h in out.hidden_states) if out.hidden_states else None,
                context_features=None if self.features is None else self.features[: length + n],
                draft_source=proposal.source,
            )
            for listener in self.listeners:
                listener(record)
        return proposal.tokens[:n].tolist() + [int(next_token)]

    def _commit_features(self, out, length: int, rows: list[int]) -> None:
        """Store the target features of the newly committed positions length-1 .. length-1+len(rows)-1.

        rows: which rows of this forward's output hold them (the accepted path, for trees)."""
        if self.features is not None:
            self.features[length - 1 : length - 1 + len(rows)] = self._features_of(out)[rows]

    def _features_of(self, out) -> torch.Tensor:
        """The draft's features of every position of a target forward: [n, F], its `feature_layers` (default:
        the last hidden state, after the final norm) concatenated."""
        layers = getattr(self.draft, "feature_layers", (-1,))
        if len(layers) == 1:
            return out.hidden_states[layers[0]][0]
        return torch.cat([out.hidden_states[i][0] for i in layers], dim=-1)

    def _tree_step(self, ids, length, max_depth, cache, cfg, stats: RequestStats, step: int) -> list[int]:
        """Greedy verification of a whole draft tree in ONE target forward (decoding/tree.py)."""
        tic = time.perf_counter()
        tree = self.draft.propose_tree(ids[:length], cfg.tree, max_depth)
        if isinstance(tree, Proposal):  # a draft with several sources chose a chain this step (drafts/hybrid.py)
            return self._verify_chain(tree, tic, ids, length, cache, cfg, None, stats, step)
        toc = time.perf_counter()
        stats.draft_s += toc - tic

        # Root (the last committed token) + N nodes; node i sits at position root + depth(i) and sees its
        # ancestors only. The committed prefix in the cache is visible to all.
        depths = tree.depths
        inputs = torch.cat([ids[length - 1 : length], tree.tokens])
        positions = torch.tensor([[length - 1] + [length - 1 + d for d in depths]])
        mask = additive_mask(ancestor_mask(tree.parents, include_root=True), length - 1, self.target.dtype)
        out = self._target_forward(inputs, cache, position_ids=positions, attention_mask=mask)
        target_logits = out.logits[0]  # [N+1, V]: row 0 = root, row i+1 = node i
        path, bonus = greedy_tree_walk(target_logits, tree.tokens, tree.parents)
        n = len(path)
        rows = [0] + [i + 1 for i in path]
        compact_cache(cache, length - 1, rows)  # the root and the accepted nodes, in order
        self._commit_features(out, length, rows)
        self.draft.commit(n, None if self.features is None else self.features[length - 1 : length + n])
        stats.target_s += time.perf_counter() - toc
        stats.target_forwards += 1
        stats.count_step(len(set(depths)), n)

        if self.listeners:
            # Report the accepted path (plus the draft's best child below it, which the target rejected) as a
            # chain, so learners see the same record shape as for chain drafting.
            rejected = [i for i, p in enumerate(tree.parents) if p == (path[-1] if path else -1)][:1]
            chain = path + rejected
            chain_rows = rows + [i + 1 for i in rejected]
            record = FeedbackRecord(
                request_id=self._request_id,
                step=step,
                first_position=length - 1,
                context_ids=torch.cat([ids[:length], tree.tokens[chain]]),
                draft_tokens=tree.tokens[chain],
                target_logits=target_logits[chain_rows],
                draft_logits=tree.logits[chain],
                target_probs=None,
                draft_probs=None,
                num_accepted=n,
                target_hidden_states=None,
                context_features=None if self.features is None else self.features[: length + n],
            )
            for listener in self.listeners:
                listener(record)
        return tree.tokens[path].tolist() + [bonus]
