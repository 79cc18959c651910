"""A bounded n-gram index: which tokens followed each short context, and how often (the lookup draft's memory).

    context (a tuple of n token ids, min_ngram <= n <= max_ngram) -> {next token id: count}

An ENTRY is one (context, next token) pair with its count; `max_entries` caps them. Eviction rule (applied after
every insertion that creates an entry, so the cap always holds): drop the least recently LEARNED context, with all
its entries. A context counts as learned when a text containing it followed by some token is added; looking it up
does not refresh it, so decoding (a private request included) never changes the index.

Memory (CPython 3.11, measured with tracemalloc by tests/test_lookup_draft.py): a context costs about
BYTES_PER_CONTEXT bytes (its tuple, its own dict, its slot in the ordered table) plus BYTES_PER_TOKEN per token in
it, and each entry about BYTES_PER_ENTRY more; `nbytes` adds them up. Orders 1..4 over text no index has seen add
up to 4 entries per token (280-350 bytes per entry measured when most contexts have one continuation), so the
lookup draft's default cap of 200,000 entries holds at least the last 50,000 learned tokens in about 70 MB;
tracemalloc measured 0.84-0.93x of `nbytes` on such streams (the estimate errs high).

`state_tensors()` / `from_tensors()` write and read the whole index as int64 tensors, in eviction order:
    contexts [C, max_ngram]  each context right-aligned, padded on the left with -1
    offsets  [C + 1]         context c's entries are next_ids/counts[offsets[c] : offsets[c + 1]]
    next_ids [E], counts [E] each context's continuations, least recently seen first
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import chain

import torch

BYTES_PER_CONTEXT = 260
BYTES_PER_TOKEN = 36  # one slot of the context tuple plus the int it holds
BYTES_PER_ENTRY = 60
TENSOR_NAMES = ("contexts", "offsets", "next_ids", "counts")


class NgramIndex:
    """Counts of the tokens that followed every context of `min_ngram`..`max_ngram` tokens in the texts added.

    `max_entries` None = unbounded (the lookup draft's per-request index, bounded by the request's length)."""

    def __init__(self, min_ngram: int, max_ngram: int, max_entries: int | None = None) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.min_ngram, self.max_ngram, self.max_entries = min_ngram, max_ngram, max_entries
        # Oldest learned context first. Each value is in recency order too: a bumped count moves to the end.
        self._table: OrderedDict[tuple[int, ...], dict[int, int]] = OrderedDict()
        self.entries = 0
        self.context_tokens = 0  # tokens over all context tuples, for `nbytes`
        self.evicted = 0  # entries dropped by the cap so far

    def __len__(self) -> int:
        """Contexts held."""
        return len(self._table)

    @property
    def nbytes(self) -> int:
        """Approximate bytes the index holds (see the module docstring)."""
        return (
            len(self._table) * BYTES_PER_CONTEXT
            + self.context_tokens * BYTES_PER_TOKEN
            + self.entries * BYTES_PER_ENTRY
        )

    def get(self, context: tuple[int, ...]) -> dict[int, int] | None:
        """The continuations of `context` with their counts (do not modify), or None if it was never learned."""
        return self._table.get(context)

    def add(self, tokens: list[int], start: int = 0) -> int:
        """Learn every context of `tokens` whose next token sits at an index >= `start` (a caller that grew
        `tokens` since its last call passes the old length, so nothing is counted twice). Returns new entries."""
        table, low, high = self._table, self.min_ngram, self.max_ngram
        created = 0
        for j in range(max(start, low), len(tokens)):
            following = tokens[j]
            for n in range(low, min(high, j) + 1):
                context = tuple(tokens[j - n : j])
                counts = table.get(context)
                if counts is None:
                    counts = table[context] = {}
                    self.context_tokens += n
                else:
                    table.move_to_end(context)
                seen = counts.pop(following, 0)
                counts[following] = seen + 1
                if not seen:
                    self.entries += 1
                    created += 1
                    self._evict()
        return created

    def _evict(self) -> None:
        """The cap's rule: least recently learned context first, all its entries at once."""
        if self.max_entries is None:
            return
        while self.entries > self.max_entries:
            context, counts = self._table.popitem(last=False)
            self.entries -= len(counts)
            self.evicted += len(counts)
            self.context_tokens -= len(context)

    def clear(self) -> None:
        self._table.clear()
        self.entries = self.context_tokens = 0

    # --- persistence -------------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The index as fresh int64 tensors (module docstring), oldest context first."""
        contexts, continuations = list(self._table), list(self._table.values())
        lengths = torch.tensor([len(c) for c in contexts], dtype=torch.long)  # [C]
        tokens = torch.tensor(list(chain.from_iterable(contexts)), dtype=torch.long)  # [sum of lengths]
        rows = torch.repeat_interleave(torch.arange(len(contexts)), lengths)
        # right-aligned: token j of a context of n tokens goes to column max_ngram - n + j
        first = torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
        columns = torch.arange(tokens.shape[0]) - first + torch.repeat_interleave(self.max_ngram - lengths, lengths)
        padded = torch.full((len(contexts), self.max_ngram), -1, dtype=torch.long)
        padded[rows, columns] = tokens
        sizes = torch.tensor([len(c) for c in continuations], dtype=torch.long)
        return {
            "contexts": padded,
            "offsets": torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]),
            "next_ids": torch.tensor(list(chain.from_iterable(continuations)), dtype=torch.long),
            "counts": torch.tensor(list(chain.from_iterable(c.values() for c in continuations)), dtype=torch.long),
        }

    def load_tensors(self, tensors: dict[str, torch.Tensor], vocab_size: int) -> None:
        """Replace the index by the one `state_tensors()` wrote; a ValueError saying what is wrong if the tensors
        are not such an index over ids 0..vocab_size-1 with this index's orders. Over the cap, the oldest
        contexts are evicted as they would have been."""
        contexts, offsets, next_ids, counts = _checked(tensors, self.min_ngram, self.max_ngram, vocab_size)
        lengths = (contexts >= 0).sum(dim=1)
        keys: list[tuple[int, ...]] = [()] * contexts.shape[0]
        for n in range(self.min_ngram, self.max_ngram + 1):
            rows = (lengths == n).nonzero().flatten()
            for row, key in zip(rows.tolist(), map(tuple, contexts[rows, self.max_ngram - n :].tolist()), strict=True):
                keys[row] = key
        bounds, ids, numbers = offsets.tolist(), next_ids.tolist(), counts.tolist()
        table: OrderedDict[tuple[int, ...], dict[int, int]] = OrderedDict()
        for c, key in enumerate(keys):
            lo, hi = bounds[c], bounds[c + 1]
            table[key] = following = dict(zip(ids[lo:hi], numbers[lo:hi], strict=True))
            if len(following) != hi - lo:
                raise ValueError(f"context {key} lists a next token twice")
        if len(table) != len(keys):
            raise ValueError("a context is stored twice")
        self._table = table
        self.entries = len(ids)
        self.context_tokens = int(lengths.sum())
        self._evict()


def _checked(
    tensors: dict[str, torch.Tensor], low: int, high: int, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if set(tensors) != set(TENSOR_NAMES):
        raise ValueError(f"expected tensors {', '.join(TENSOR_NAMES)}, found {', '.join(sorted(tensors)) or 'none'}")
    if any(t.dtype != torch.long for t in tensors.values()):
        raise ValueError("every tensor must be int64")
    contexts, offsets, next_ids, counts = (tensors[name] for name in TENSOR_NAMES)
    if contexts.dim() != 2 or contexts.shape[1] != high:
        raise ValueError(f"contexts must be [C, {high}] (max_ngram {high}), got {list(contexts.shape)}")
    rows = contexts.shape[0]
    if offsets.shape != (rows + 1,) or next_ids.dim() != 1 or counts.shape != next_ids.shape:
        raise ValueError("offsets must be [C + 1] and next_ids, counts the same [E]")
    steps = offsets.diff()
    if int(offsets[0]) != 0 or int(offsets[-1]) != next_ids.shape[0] or bool((steps < 1).any()):
        raise ValueError("offsets must rise from 0 to E with at least one entry per context")
    if bool(((next_ids < 0) | (next_ids >= vocab_size)).any()) or bool(
        ((contexts < -1) | (contexts >= vocab_size)).any()
    ):
        raise ValueError(f"a token id lies outside the vocabulary 0..{vocab_size - 1}")
    if bool((counts < 1).any()):
        raise ValueError("every count must be >= 1")
    real = contexts >= 0
    lengths = real.sum(dim=1)
    right_aligned = bool((real.long().diff(dim=1) >= 0).all())
    if not right_aligned or bool(((lengths < low) | (lengths > high)).any()):
        raise ValueError(f"every context must hold {low}..{high} tokens, padded on the left with -1")
    return contexts, offsets, next_ids, counts
