"""The feature memory: earlier traffic recalled by the target's own features, not by exact n-grams.

A nearest-neighbour draft source (kNN-LM's idea, applied to drafting) that learns without gradients. One entry per
committed position t of an earlier learned request:
- key: f_t, the target's last hidden state at t (after its final norm), unit-normalised, [d];
- token: x_{t+1}, the token committed after it (the step's input next to f_t, as for an EAGLE head);
- continuation: x_{t+2} .. x_{t+1+C}, the committed tokens that followed (-1 past the request's end).
Query at a verify step with committed ids [L]: f_{L-2} and x_{L-1} = ids[-1]. Among the entries whose token is
x_{L-1}, take the one whose key has the largest cosine with f_{L-2}; if it is at least `min_similarity`, propose its
continuation (up to k tokens). The target's features at t summarise everything before t, so a match says "the
target was in this state before and the text went on like this", where an n-gram match needs the exact last
tokens. Proposals are a function of past traffic and the committed context only, so drafting them keeps the
output the target's (greedy: exactly; sampling: q is one-hot on the proposed token, which the verifier is told).

Measured before it was built (offline, the embedded target and the bundled EAGLE head, 64 requests of a domain the
head never saw, the memory filled from earlier rounds of 4): where neither lookup index matched, a recalled token
was right 0.45-0.55 of the time, against the head's 0.12-0.14, and the first drafted token of the hybrid with the
memory before the head was right 0.518 of the time over the last third against 0.478 without it (summaries; math
0.765 against 0.724); similarity 0.8 did better than 0.9 and 0.95 on both (docs/benchmarks.md).

Memory: `max_entries` keys of d floats, a ring (the oldest entry is overwritten first): at d = 576 (SmolLM2-135M)
2.3 KB per entry, 75 MB at the default cap. A query costs one comparison over the tokens held and one small matrix
product over the entries with the same token.
"""

from __future__ import annotations

import torch

MAX_ENTRIES = 32_768
CONTINUATION = 4  # tokens kept after each entry: the longest chain it can propose
MIN_SIMILARITY = 0.8  # cosine of the target features: measured better than 0.9 and 0.95 (module docstring)
STATE_FORMAT = 1


class FeatureMemory:
    """Keys [N, d] (unit norm), tokens [N] and continuations [N, C] of earlier traffic, N <= max_entries."""

    def __init__(
        self,
        dim: int,
        max_entries: int = MAX_ENTRIES,
        continuation: int = CONTINUATION,
        min_similarity: float = MIN_SIMILARITY,
    ) -> None:
        if max_entries < 1 or continuation < 1:
            raise ValueError(
                f"a feature memory needs max_entries >= 1 and continuation >= 1, got {max_entries}, {continuation}"
            )
        self.dim, self.max_entries, self.continuation = dim, max_entries, continuation
        self.min_similarity = min_similarity
        self.keys = torch.empty(0, dim)
        self.tokens = torch.empty(0, dtype=torch.long)
        self.following = torch.empty(0, continuation, dtype=torch.long)
        self.next_slot = 0  # where the next entry goes once the ring is full (its oldest entry)
        self.evicted = 0

    def __len__(self) -> int:
        return self.tokens.shape[0]

    # --- learning --------------------------------------------------------------------------------------------
    def add(self, ids: torch.Tensor, features: torch.Tensor) -> int:
        """One request's committed ids [L] and the target's features of its first rows [M, F] (M >= L - 1; the
        last `dim` columns are the last hidden state). Adds positions t = 0 .. L-3; returns how many."""
        n = min(ids.shape[0] - 2, features.shape[0])
        if n < 1:
            return 0
        keys = torch.nn.functional.normalize(features[:n, -self.dim :].float(), dim=-1)
        padded = torch.cat([ids, torch.full((self.continuation,), -1, dtype=ids.dtype)])
        following = padded.unfold(0, self.continuation, 1)[2 : 2 + n]  # row t: x_{t+2} .. x_{t+1+C}
        self._append(keys, ids[1 : 1 + n].clone(), following.clone())
        return n

    def _append(self, keys: torch.Tensor, tokens: torch.Tensor, following: torch.Tensor) -> None:
        """Fill the ring to max_entries, then overwrite its oldest entries (the newest `max_entries` are kept)."""
        self.evicted += max(0, keys.shape[0] - self.max_entries)  # never stored: newer ones of the same batch win
        keys, tokens, following = keys[-self.max_entries :], tokens[-self.max_entries :], following[-self.max_entries :]
        room = self.max_entries - len(self)
        if room > 0:
            take = min(room, keys.shape[0])
            self.keys = torch.cat([self.keys, keys[:take]])
            self.tokens = torch.cat([self.tokens, tokens[:take]])
            self.following = torch.cat([self.following, following[:take]])
            keys, tokens, following = keys[take:], tokens[take:], following[take:]
        offset = 0  # ring writes, possibly wrapping: one contiguous piece at a time
        while offset < keys.shape[0]:
            piece = min(keys.shape[0] - offset, self.max_entries - self.next_slot)
            rows = slice(self.next_slot, self.next_slot + piece)
            self.keys[rows] = keys[offset : offset + piece]
            self.tokens[rows] = tokens[offset : offset + piece]
            self.following[rows] = following[offset : offset + piece]
            self.evicted += piece
            offset += piece
            self.next_slot = (self.next_slot + piece) % self.max_entries

    # --- drafting --------------------------------------------------------------------------------------------
    def recall(self, feature: torch.Tensor, token: int, k: int) -> tuple[list[int], float]:
        """feature [F] (f_{L-2}; its last `dim` columns are used), token = x_{L-1} -> (up to k tokens, similarity);
        ([], best similarity or -1) when no entry with this token is at least `min_similarity`."""
        rows = (self.tokens == token).nonzero().flatten()
        if k < 1 or not rows.numel():
            return [], -1.0
        query = torch.nn.functional.normalize(feature[-self.dim :].float(), dim=-1)
        similarity, best = (self.keys[rows] @ query).max(dim=0)
        if float(similarity) < self.min_similarity:
            return [], float(similarity)
        following = self.following[rows[best], :k].tolist()
        return _until_pad(following), float(similarity)

    # --- state -----------------------------------------------------------------------------------------------
    def memory(self) -> dict[str, float]:
        return {
            "memory_entries": len(self),
            "memory_bytes": self.keys.nbytes + self.tokens.nbytes + self.following.nbytes,
            "memory_max_entries": self.max_entries,
        }

    def describe(self) -> dict:
        return {"format": STATE_FORMAT, "dim": self.dim, "continuation": self.continuation}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Oldest first (so that loading keeps the eviction order)."""
        order = torch.cat([torch.arange(self.next_slot, len(self)), torch.arange(0, self.next_slot)])
        return {
            "keys": self.keys[order].clone(),
            "tokens": self.tokens[order].clone(),
            "following": self.following[order].clone(),
        }

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        """Replace the entries by saved ones; a ValueError says what does not match (the live entries are kept)."""
        for key in ("format", "dim", "continuation"):
            if info.get(key) != self.describe()[key]:
                mine = self.describe()[key]
                raise ValueError(f"its feature memory was saved with {key} {info.get(key)!r}, this draft has {mine!r}")
        keys, tokens, following = (tensors.get(name) for name in ("keys", "tokens", "following"))
        n = None if tokens is None else tokens.shape[0]
        if (
            keys is None
            or following is None
            or keys.shape != (n, self.dim)
            or following.shape != (n, self.continuation)
            or tokens.dim() != 1
        ):
            raise ValueError("its feature memory tensors are missing or have the wrong shapes")
        fresh = FeatureMemory(self.dim, self.max_entries, self.continuation, self.min_similarity)
        fresh._append(keys.float(), tokens.long(), following.long())
        self.keys, self.tokens, self.following = fresh.keys, fresh.tokens, fresh.following
        self.next_slot, self.evicted = fresh.next_slot, 0


def _until_pad(tokens: list[int]) -> list[int]:
    """The tokens before the first -1 (a continuation past its request's end)."""
    return tokens[: tokens.index(-1)] if -1 in tokens else tokens
