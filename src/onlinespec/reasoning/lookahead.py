"""One round of lookahead reasoning, and the accept rule.

A round: the draft writes up to `depth` steps, one after another; the target writes its own step after each
drafted prefix (the steps so far + the first i drafted steps, i = 0..n-1) in one batched call; a judge compares
the drafted step i with the target's step i. Kept: the longest run of accepted drafted steps, then the target's
step at the first rejection (it follows an accepted prefix, so it is what the target would have written there).
When every drafted step is accepted, the round keeps them all.

Not token-lossless: an accepted step is the draft's text, judged equivalent to the target's, not equal to it.

Each rejection at the first rejected position yields a preference pair for the draft's online learning:
context = the steps so far + the accepted drafted steps, chosen = the target's step, rejected = the draft's step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from onlinespec.reasoning.judges import Judge
from onlinespec.reasoning.step_writer import StepWriter, WrittenStep


@dataclass(frozen=True)
class PreferencePair:
    """A target's step preferred over the draft's after the same context (the problem is the writer's)."""

    context: tuple[str, ...]  # the steps before, as text
    chosen: str  # the target's step
    rejected: str  # the draft's step


@dataclass
class RoundResult:
    drafted: list[WrittenStep]
    target: list[WrittenStep]
    verdicts: list[bool]
    accepted: int  # drafted steps kept
    kept: list[str]  # the steps this round adds to the answer
    finished: bool  # the answer ended in this round
    pair: PreferencePair | None
    seconds: dict[str, float] = field(default_factory=dict)  # draft, target, judge


def accepted_steps(verdicts: list[bool]) -> int:
    """Length of the longest prefix of accepted drafted steps."""
    n = 0
    for ok in verdicts:
        if not ok:
            break
        n += 1
    return n


def judged(verdict: bool, draft: str, target: str) -> bool:
    """A judge's verdict, except that an empty drafted step matches only an empty target step (a judge that
    compares numbers and words would find nothing to disagree with)."""
    if not draft.strip() or not target.strip():
        return not draft.strip() and not target.strip()
    return verdict


def kept_steps(drafted: list[str], target: list[str], accepted: int) -> list[str]:
    """The accept rule: the accepted drafted steps, then the target's step at the first rejection (if any)."""
    return drafted[:accepted] + ([target[accepted]] if accepted < len(drafted) else [])


def lookahead_round(
    steps: list[str], draft: StepWriter, target: StepWriter, judge: Judge, depth: int, max_step_tokens: int = 100
) -> RoundResult:
    """Run one round after `steps` (the answer so far); see the module docstring."""
    if depth < 1:
        raise ValueError(f"lookahead depth must be >= 1, got {depth}")
    t0 = time.perf_counter()
    drafted: list[WrittenStep] = []
    for _ in range(depth):
        step = draft.write([steps + [d.text for d in drafted]], max_step_tokens)[0]
        drafted.append(step)
        if step.finished:
            break
    t1 = time.perf_counter()
    texts = [d.text for d in drafted]
    theirs = target.write([steps + texts[:i] for i in range(len(texts))], max_step_tokens)
    t2 = time.perf_counter()
    context = target.tokenizer.decode(target.prompt_ids, skip_special_tokens=True) + "".join(steps)
    raw = judge.verdicts(context, [(d.text, t.text) for d, t in zip(drafted, theirs, strict=True)])
    verdicts = [judged(v, d.text, t.text) for v, d, t in zip(raw, drafted, theirs, strict=True)]
    t3 = time.perf_counter()
    n = accepted_steps(verdicts)
    kept = kept_steps(texts, [t.text for t in theirs], n)
    finished = drafted[-1].finished if n == len(drafted) else theirs[n].finished
    pair = None
    if n < len(drafted) and theirs[n].text.strip() and theirs[n].text != texts[n]:
        pair = PreferencePair(tuple(steps + texts[:n]), theirs[n].text, texts[n])
    return RoundResult(
        drafted, theirs, verdicts, n, kept, finished, pair, {"draft": t1 - t0, "target": t2 - t1, "judge": t3 - t2}
    )
