"""The speculative decoding loop: draft k tokens, verify them in ONE target forward, keep the accepted prefix
plus one target token, roll both KV caches back to the accepted length (SPEC.md §1).

The engine knows nothing about learning: it hands a FeedbackRecord of every verify step to its listeners.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from onlinespec.decoding.autoregressive import choose_token
from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.feedback import FeedbackListener, FeedbackRecord
from onlinespec.decoding.kv_cache import new_cache, rollback
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.sampling import probs_from_logits
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.decoding.verify import verify_greedy, verify_sampling
from onlinespec.drafts.base import Draft


class SpeculativeEngine:
    """Batch-1 chain speculative decoding of `target` with `draft`."""

    def __init__(self, target: torch.nn.Module, draft: Draft) -> None:
        self.target = target
        self.draft = draft
        self.listeners: list[FeedbackListener] = []
        self.target_cache = None  # the current request's target KV cache (holds all committed tokens but the last)
        self._request_id = 0

    def add_listener(self, listener: FeedbackListener) -> None:
        self.listeners.append(listener)

    def _target_forward(self, input_ids: torch.Tensor, cache, logits_to_keep: int = 0):
        return self.target(
            input_ids=input_ids[None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=logits_to_keep,
            output_hidden_states=bool(self.listeners) and self.draft.wants_target_hidden,
        )

    @torch.inference_mode()
    def stream(
        self, prompt_ids: torch.Tensor, cfg: GenerationConfig, stop: StopCriteria, stats: RequestStats
    ) -> Iterator[list[int]]:
        """prompt_ids: LongTensor [T]. Yields the new token ids of each target forward (1..k+1 of them)."""
        resumed = time.perf_counter()  # time spent by the caller between yields is not ours
        self._request_id += 1
        generator = cfg.generator()
        stats.prompt_tokens = prompt_ids.shape[0]
        ids = torch.empty(prompt_ids.shape[0] + cfg.max_new_tokens + 1, dtype=torch.long)
        ids[: prompt_ids.shape[0]] = prompt_ids
        length = prompt_ids.shape[0]  # committed tokens; the target cache holds all but the last one

        # Prefill: the target's prompt pass already yields the first new token.
        cache = self.target_cache = new_cache(self.target)
        tic = time.perf_counter()
        logits = self._target_forward(prompt_ids, cache, logits_to_keep=1).logits[0, -1]
        first = choose_token(logits, cfg, generator)
        stats.target_s += time.perf_counter() - tic
        stats.target_forwards += 1
        self.draft.begin(prompt_ids)
        ids[length] = first
        length += 1
        emitted = stop.extend([int(first)])
        stats.new_tokens += len(emitted)
        stats.wall_s += time.perf_counter() - resumed
        yield emitted
        resumed = time.perf_counter()

        step = 0
        while not stop.finished:
            k = min(cfg.k, stop.remaining - 1)  # never draft past the token budget
            if k == 0:
                new_ids = self._plain_step(ids, length, cache, cfg, generator, stats)
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
        logits = self._target_forward(ids[length - 1 : length], cache).logits[0, -1]
        token = choose_token(logits, cfg, generator)
        stats.target_s += time.perf_counter() - tic
        stats.target_forwards += 1
        return [int(token)]

    def _speculative_step(self, ids, length, k, cache, cfg, generator, stats: RequestStats, step: int) -> list[int]:
        tic = time.perf_counter()
        proposal = self.draft.propose(ids[:length], k, cfg.sampling, generator)
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
        # The cache now holds length + k positions; keep the committed ones and the accepted drafts.
        rollback(cache, length + n)
        self.draft.commit(n)
        stats.target_s += time.perf_counter() - toc
        stats.target_forwards += 1
        stats.count_step(k, n)

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
            )
            for listener in self.listeners:
                listener(record)
        return proposal.tokens[:n].tolist() + [int(next_token)]
