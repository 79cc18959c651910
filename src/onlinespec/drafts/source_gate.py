"""The hybrid draft's sources, how often each was right, and the gate that stops earlier traffic drafting badly.

The hybrid (drafts/hybrid.py) drafts each verify step from one of three sources:
- `request`: this request's own text (prompt lookup), the lookup draft's request index;
- `shared`: earlier traffic, the lookup draft's shared index (filled by the `count` learner, or restored);
- `head`: the head draft (by default the bundled EAGLE head).
Every proposal is scored one step later, when the committed tokens are known: its score is the length of its
longest prefix equal to the tokens the target committed after it (at most the number committed). In greedy
decoding that is the number of its tokens the target accepts when all are verified, whatever the engine's
cost rule cut; with sampling it is an estimate. The head is scored on its chain before the hybrid's confidence
cut, so the score measures each source's guesses, not the cuts applied to them.

The gate: each source of earlier traffic (GATED: the shared index) drafts only while its recent score is at least
the head's (each an exponential moving average with weight 1 - RECENT_DECAY on the newest score, about the last
ten proposals). Earlier traffic helps where the new requests resemble it and costs accepted tokens where they do
not (a new domain: measured in docs/benchmarks.md, issue 11), where the head would have drafted. While closed,
the source's proposal is still computed (greedy: a few dict look-ups) and scored against what the target
committed, so the gate reopens when earlier traffic becomes right again. The gate reads past steps only, never the
tokens about to be drawn, so exact speculative sampling holds whichever source drafts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

SOURCES = ("request", "shared", "head")
GATED = ("shared",)  # earlier traffic: drafts only while it does at least as well as the head
COUNTS = ("steps", "scored", "first_right", "matched", "held_back")  # SourceScore's counts, summed over rounds
RECENT_DECAY = 0.9  # the weight of the previous recent score; the newest gets 1 - RECENT_DECAY


@dataclass
class SourceScore:
    """One source's proposals since the draft was built."""

    steps: int = 0  # verify steps this source drafted
    scored: int = 0  # proposals scored: those it drafted, and (a gated source) those the gate held back
    held_back: int = 0  # steps it had a proposal the gate did not let it draft (gated sources only)
    first_right: int = 0  # scored proposals whose first token the target committed
    matched: int = 0  # sum of the scores (matched prefix lengths)
    recent: float | None = None  # moving average of the scores; None before the first

    def add(self, score: int) -> None:
        self.scored += 1
        self.first_right += score > 0
        self.matched += score
        self.recent = score if self.recent is None else RECENT_DECAY * self.recent + (1 - RECENT_DECAY) * score

    def to_dict(self) -> dict:
        """The counts, plus the first-token rate and the mean score (0 when nothing was scored)."""
        n = max(self.scored, 1)
        return {**asdict(self), "first_token_rate": self.first_right / n, "mean_score": self.matched / n}


class SourceGate:
    """Scores the hybrid's proposals one step later and decides whether each source of earlier traffic may draft."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.scores = {source: SourceScore() for source in SOURCES}
        self._pending: list[tuple[str, int, list[int]]] = []  # (source, committed length, tokens) awaiting a score

    @property
    def held_back(self) -> int:
        """Steps the shared index had a proposal the gate kept out."""
        return self.scores["shared"].held_back

    def is_open(self, source: str) -> bool:
        """May `source` (one of GATED) draft this step? Yes until both it and the head have a recent score, then
        while its recent score is at least the head's."""
        mine, head = self.scores[source].recent, self.scores["head"].recent
        return not self.enabled or mine is None or head is None or mine >= head

    def shared_open(self) -> bool:
        return self.is_open("shared")

    def proposed(self, source: str, ids: torch.Tensor, tokens: torch.Tensor, drafted: bool) -> None:
        """`source` proposed tokens [n] after the committed ids [L]; drafted = it is the step's draft (else the
        gate held it back). Scored at the next `settle`."""
        if drafted:
            self.scores[source].steps += 1
        elif source in GATED:
            self.scores[source].held_back += 1
        if tokens.numel():
            self._pending.append((source, ids.shape[0], tokens.tolist()))

    def settle(self, ids: torch.Tensor) -> None:
        """ids [L']: the committed tokens now. Scores the proposals made at a shorter committed length."""
        for source, length, tokens in self._pending:
            committed = ids[length : length + len(tokens)].tolist()
            score = 0
            while score < len(committed) and committed[score] == tokens[score]:
                score += 1
            self.scores[source].add(score)
        self._pending = []

    def forget(self) -> None:
        """A new request: the last proposal of the previous one is never scored (its commit is not seen)."""
        self._pending = []

    def report(self) -> dict:
        """{source: SourceScore.to_dict()} and held_back (the shared index's), for telemetry and benchmarks."""
        return {**{s: score.to_dict() for s, score in self.scores.items()}, "held_back": self.held_back}


def source_counts(draft: object) -> dict[str, dict[str, int]]:
    """A draft's cumulative per-source counts, {source: {COUNTS}} (a hybrid's `report()`); {} for a draft with one
    source. Two readings' difference (`counts_between`) is what a round drafted: the bench's rounds.jsonl and the
    learner session's round records (`--telemetry`) keep it as `sources`."""
    report = getattr(draft, "report", None)
    if report is None:
        return {}
    return {s: {k: v[k] for k in COUNTS} for s, v in report().items() if isinstance(v, dict)}


def counts_between(now: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """now - before, per source and count."""
    return {s: {k: v - before.get(s, {}).get(k, 0) for k, v in counts.items()} for s, counts in now.items()}
