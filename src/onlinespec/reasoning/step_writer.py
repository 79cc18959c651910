"""Greedy writing of reasoning steps with one model, several contexts at once, reusing the KV cache of the shared
context across calls.

A context is the problem (rendered with the model's own chat template) followed by the steps so far, as text: the
draft and the target need not share a tokenizer, so each writer tokenizes the same text its own way. The cache
holds the tokens of the last context written from; a new call keeps its longest common prefix (a `crop`) and feeds
only what is new, so a round costs the new steps' tokens, not a prefill of the whole answer.

Several contexts are written in one batched call (the target writes its step after each drafted prefix at once):
their common prefix is in the cache, repeated per row; each row's own suffix is left-padded to the same length,
pads masked out of attention and skipped by the position ids, so each row computes what it would alone.
"""

from __future__ import annotations

import copy
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


class StepWriter:
    """Writes steps of one problem's answer with `model`, greedily (argmax), caching the shared context."""

    def __init__(self, model, tokenizer, problem: str | Messages, chat: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_ids: list[int] = encode_prompt(tokenizer, problem, chat).tolist()
        if not self.prompt_ids:
            raise ValueError("the problem encodes to no tokens")
        self.eos = eos_ids(model, tokenizer)
        self._cache: DynamicCache | None = None
        self._cached: list[int] = []  # the tokens whose keys and values are in the cache, in order

    def ids_of(self, steps: list[str]) -> list[int]:
        """Token ids of the context: the rendered problem, then the steps' text."""
        text = "".join(steps)
        return self.prompt_ids + (self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else [])

    def _sync(self, want: list[int]) -> None:
        """Make the cache hold exactly `want`: keep the common prefix with what it holds, feed the rest."""
        keep = common_prefix(self._cached, want)
        if keep == 0 or self._cache is None:
            self._cache, keep = DynamicCache(), 0
        elif keep < len(self._cached):
            self._cache.crop(keep - len(self._cached))  # negative: drop that many
        self._cached = self._cached[:keep]
        if len(want) > keep:
            ids = torch.tensor([want[keep:]], dtype=torch.long)
            self.model(input_ids=ids, past_key_values=self._cache, use_cache=True)
            self._cached = list(want)

    @torch.inference_mode()
    def write(
        self, contexts: list[list[str]], max_tokens: int = MAX_STEP_TOKENS, cut_steps: bool = True
    ) -> list[WrittenStep]:
        """Write the next step after each context (a list of steps), all in one batched forward per token.

        With `cut_steps=False` each row runs to end of sequence or `max_tokens` (the whole answer at once).
        Shapes: rows B = len(contexts); the cache [B, heads, L + S + t, dim] while generating the t-th token.
        """
        rows = [self.ids_of(steps) for steps in contexts]
        shared = min(len(r) for r in rows) - 1  # every row keeps at least one token of its own to feed
        for r in rows[1:]:
            shared = min(shared, common_prefix(rows[0], r))
        self._sync(rows[0][:shared])
        batch = len(rows)
        if batch == 1:
            cache = self._cache
        else:
            cache = copy.deepcopy(self._cache)
            cache.batch_repeat_interleave(batch)
        suffixes = [r[shared:] for r in rows]
        width = max(len(s) for s in suffixes)
        ids = torch.zeros(batch, width, dtype=torch.long)
        mask = torch.zeros(batch, shared + width, dtype=torch.long)
        mask[:, :shared] = 1
        positions = torch.zeros(batch, width, dtype=torch.long)
        for i, s in enumerate(suffixes):
            pad = width - len(s)
            ids[i, pad:] = torch.tensor(s)
            mask[i, shared + pad :] = 1
            positions[i, pad:] = torch.arange(shared, shared + len(s))
        generated: list[list[int]] = [[] for _ in rows]
        result: list[WrittenStep | None] = [None] * batch
        next_pos = positions[:, -1] + 1
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        ).logits[:, -1]
        while True:
            tokens = logits.argmax(-1)  # [B]
            for i in range(batch):
                if result[i] is None:
                    result[i] = self._advance(generated[i], int(tokens[i]), max_tokens, cut_steps)
            if all(r is not None for r in result):
                break
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=torch.long)], dim=1)
            logits = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1]
            next_pos = next_pos + 1
        if batch == 1:  # the cache now holds the row's context and all generated tokens but the last
            self._cached = rows[0] + generated[0][:-1]
        return [r for r in result if r is not None]

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
