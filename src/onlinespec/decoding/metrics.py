"""Speculative-decoding statistics, with Spec-Bench's definitions (docs/method.md §1): one summable type for a
request, a round of requests and a whole run, so tau, alpha and tokens/s are defined here once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class RequestStats:
    """Counts and times of one request, or (summed with `+` / `RequestStats.total`) of several."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    target_forwards: int = 0  # prefill included: it emits the first new token
    drafted: int = 0
    accepted: int = 0
    accept_hist: list[int] = field(default_factory=list)  # accept_hist[n] = verify steps that accepted n drafts
    wall_s: float = 0.0  # the whole generate call, prefill included, tokenisation excluded
    draft_s: float = 0.0
    target_s: float = 0.0
    requests: int = 1  # requests summed into these stats (not in to_dict: a request's output has no use for it)

    def __add__(self, other: RequestStats) -> RequestStats:
        """Field-wise sum; accept_hist is summed elementwise (the shorter one padded with zeros)."""
        if not isinstance(other, RequestStats):
            return NotImplemented
        hist = [0] * max(len(self.accept_hist), len(other.accept_hist))
        for source in (self.accept_hist, other.accept_hist):
            for n, count in enumerate(source):
                hist[n] += count
        return RequestStats(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            new_tokens=self.new_tokens + other.new_tokens,
            target_forwards=self.target_forwards + other.target_forwards,
            drafted=self.drafted + other.drafted,
            accepted=self.accepted + other.accepted,
            accept_hist=hist,
            wall_s=self.wall_s + other.wall_s,
            draft_s=self.draft_s + other.draft_s,
            target_s=self.target_s + other.target_s,
            requests=self.requests + other.requests,
        )

    @classmethod
    def zero(cls) -> RequestStats:
        """The sum of no requests."""
        return cls(requests=0)

    @classmethod
    def total(cls, stats: Iterable[RequestStats]) -> RequestStats:
        """The sum of `stats`, in order (floats add left to right, as `sum` would); zero() when empty."""
        out = cls.zero()
        for item in stats:
            out = out + item
        return out

    @property
    def tau(self) -> float:
        """Mean tokens emitted per target forward, the correction/bonus token included (AR = 1.0)."""
        return self.new_tokens / self.target_forwards if self.target_forwards else 0.0

    @property
    def alpha(self) -> float:
        """Accepted drafted tokens / drafted tokens."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def count_step(self, k: int, n_accepted: int) -> None:
        self.drafted += k
        self.accepted += n_accepted
        if len(self.accept_hist) <= n_accepted:
            self.accept_hist.extend([0] * (n_accepted + 1 - len(self.accept_hist)))
        self.accept_hist[n_accepted] += 1

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "target_forwards": self.target_forwards,
            "tau": round(self.tau, 4),
            "alpha": round(self.alpha, 4),
            "tokens_per_s": round(self.tokens_per_s, 3),
            "wall_s": round(self.wall_s, 4),
            "draft_s": round(self.draft_s, 4),
            "target_s": round(self.target_s, 4),
            "drafted": self.drafted,
            "accepted": self.accepted,
            "accept_hist": self.accept_hist,
        }
