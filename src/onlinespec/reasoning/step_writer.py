"""Greedy writing of reasoning steps with one model, reusing the KV cache of the context across calls.

A context is the problem (rendered with the model's own chat template) followed by the steps so far, as text: the
draft and the target need not share a tokenizer, so each writer tokenizes the same text its own way, one step at a
time (`ids_of`), so that the context of a longer prefix of steps always extends a shorter one token for token. The
cache holds the tokens of the last context written from; a new call keeps its longest common prefix (a crop) and
feeds only what is new, so a round costs the new steps' tokens, not a prefill of the whole answer.

`write_after_each` is the target's side of a round: its step after every prefix of the drafted steps, as one
batch. One forward over the drafted steps (batch 1) fills the cache and gives every row's first token (the logits
at the end of each prefix); the cache is then repeated per row, row i attending only to its own prefix (a mask over
the later drafted tokens), its new tokens at positions that continue that prefix. A row that the caller rejects
ends the rows after it (their steps would follow a rejected one), and finished rows leave the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from onlinespec.prompting import Messages, encode_prompt
from onlinespec.reasoning.steps import MAX_STEP_TOKENS, step_end


@dataclass(frozen=True)
class WrittenStep:
    """One written step: its text (cut just after the step end), how many tokens this model generated for it, and
    whether the model ended its answer (an end-of-sequence token) in it."""

    text: str
    tokens: int
    finished: bool


def eos_ids(model, tokenizer) -> frozenset[int]:
    """End-of-sequence ids: the tokenizer's and the generation config's (Qwen's chat models end on <|im_end|>)."""
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None), getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return frozenset(ids)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def reuse_prefix(
    cache: DynamicCache, cached: list[int], want: list[int], feed_at_least: int = 0
) -> tuple[DynamicCache, int]:
    """Keep what `cache` holds (the tokens `cached`) up to its longest common prefix with `want`, leaving at least
    `feed_at_least` of `want`'s tokens to feed; returns the cache to feed the rest into (a new one when nothing is
    kept) and how many tokens of `want` it holds."""
    keep = min(common_prefix(cached, want), len(want) - feed_at_least)
    if keep <= 0:
        return DynamicCache(), 0
    if keep < len(cached):
        cache.crop(keep - len(cached))  # negative: drop that many from the end
    return cache, keep


class StepWriter:
    """Writes steps of one problem's answer with `model`, greedily (argmax), caching the context."""

    def __init__(self, model, tokenizer, problem: str | Messages, chat: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_ids: list[int] = encode_prompt(tokenizer, problem, chat).tolist()
        if not self.prompt_ids:
            raise ValueError("the problem encodes to no tokens")
        self.eos = eos_ids(model, tokenizer)
        self._cache = DynamicCache()
        self._cached: list[int] = []  # the tokens whose keys and values are in the cache, in order

    def ids_of(self, steps: list[str]) -> list[int]:
        """Token ids of the context: the rendered problem, then each step tokenized on its own."""
        ids = list(self.prompt_ids)
        for step in steps:
            ids += self.tokenizer(step, add_special_tokens=False)["input_ids"] if step else []
        return ids

    def _feed(self, want: list[int]) -> torch.Tensor | None:
        """Make the cache hold exactly `want` (keep the common prefix with what it holds, feed the rest); the
        logits [N, V] of the N tokens fed (None when none was)."""
        self._cache, keep = reuse_prefix(self._cache, self._cached, want)
        self._cached = self._cached[:keep]
        if len(want) == keep:
            return None
        ids = torch.tensor([want[keep:]], dtype=torch.long)
        logits = self.model(input_ids=ids, past_key_values=self._cache, use_cache=True).logits[0]
        self._cached = list(want)
        return logits

    @torch.inference_mode()
    def write(self, steps: list[str], max_tokens: int = MAX_STEP_TOKENS, cut_steps: bool = True) -> WrittenStep:
        """The next step after `steps`; with `cut_steps=False`, the rest of the answer (to end of sequence or
        `max_tokens`). The cache keeps the context and the generated tokens."""
        ids = self.ids_of(steps)
        self._feed(ids[:-1])
        first = self.model(input_ids=torch.tensor([ids[-1:]]), past_key_values=self._cache, use_cache=True).logits
        self._cached = list(ids)
        mask = torch.ones(1, len(ids), dtype=torch.long)
        written, generated = self._generate(
            self._cache, first[:, -1].argmax(-1), mask, torch.tensor([len(ids)]), max_tokens, cut_steps
        )
        self._cached += generated[0][:-1]  # every generated token but the last has been fed
        return written[0]

    @torch.inference_mode()
    def write_after_each(
        self,
        steps: list[str],
        drafted: list[str],
        max_tokens: int = MAX_STEP_TOKENS,
        keep_going: Callable[[int, WrittenStep], bool] | None = None,
    ) -> list[WrittenStep | None]:
        """Row i: the step after `steps + drafted[:i]`, for i = 0..len(drafted)-1, as one batch (module docstring).
        `keep_going(i, step)` is called as row i ends; False cancels the rows after i (their entries are None).
        Shapes: rows R = len(drafted); the cache [R', heads, L + t, dim] at the t-th token, R' rows still going."""
        ends = [len(self.ids_of(steps + drafted[:i])) for i in range(len(drafted))]
        full = self.ids_of(steps + drafted)
        self._feed(full[: ends[0] - 1])  # the shortest prefix but its last token, reusing the cache
        tail = self.model(
            input_ids=torch.tensor([full[len(self._cached) :]]), past_key_values=self._cache, use_cache=True
        ).logits[0]
        start = len(self._cached)
        self._cached = list(full)
        first = torch.stack([tail[e - 1 - start] for e in ends]).argmax(-1)  # [R]: each row's first token
        rows = len(drafted)
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(rows)
        mask = torch.zeros(rows, len(full), dtype=torch.long)
        for i, e in enumerate(ends):
            mask[i, :e] = 1  # row i sees its own prefix only
        written, _ = self._generate(cache, first, mask, torch.tensor(ends), max_tokens, True, keep_going)
        return written

    def _generate(
        self,
        cache: DynamicCache,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        max_tokens: int,
        cut_steps: bool,
        keep_going: Callable[[int, WrittenStep], bool] | None = None,
    ) -> tuple[list[WrittenStep | None], list[list[int]]]:
        """Greedy rows from their first tokens [R] (not yet fed); `mask` [R, L] over the cache, `positions` [R]
        the position of each row's first token. Rows leave the batch as they end or are cancelled."""
        rows = tokens.shape[0]
        generated: list[list[int]] = [[] for _ in range(rows)]
        written: list[WrittenStep | None] = [None] * rows
        active = list(range(rows))  # original row of each batch row
        cancelled_after = rows
        while True:
            still = []
            for b, row in enumerate(active):
                if row >= cancelled_after:
                    continue
                step = self._advance(generated[row], int(tokens[b]), max_tokens, cut_steps)
                if step is None:
                    still.append(b)
                    continue
                written[row] = step
                if keep_going is not None and not keep_going(row, step):
                    cancelled_after = min(cancelled_after, row + 1)
            still = [b for b in still if active[b] < cancelled_after]
            if not still:
                return written, generated
            if len(still) < len(active):
                index = torch.tensor(still)
                cache.batch_select_indices(index)
                tokens, mask, positions = tokens[index], mask[index], positions[index]
                active = [active[b] for b in still]
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=torch.long)], dim=1)
            logits = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1]
            tokens, positions = logits.argmax(-1), positions + 1

    def _advance(self, generated: list[int], token: int, max_tokens: int, cut_steps: bool) -> WrittenStep | None:
        """Append `token` to a row; its WrittenStep when the row is done (end of sequence, step end, or the limit),
        else None."""
        if token in self.eos:
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            generated.append(token)
            return WrittenStep(text, len(generated), finished=True)
        generated.append(token)
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        end = step_end(text) if cut_steps else None
        if end is not None:
            return WrittenStep(text[:end], len(generated), finished=False)
        if len(generated) >= max_tokens:
            return WrittenStep(text, len(generated), finished=False)
        return None
