"""One round of lookahead reasoning, and the accept rule.

A round: the draft writes up to `depth` steps, one after another; the target writes its own step after each
drafted prefix (the steps so far + the first i drafted steps, i = 0..n-1) in one batched call; a judge compares
the drafted step i with the target's step i as that row ends, and a rejection ends the rows after it.
Kept: the longest run of accepted drafted steps, then the target's step at the first rejection (it follows an
accepted prefix, so it is what the target would have written there). When every drafted step is accepted, the
round keeps them all.

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
    target: list[WrittenStep | None]  # None: a row ended early because a row before it was rejected
    verdicts: list[bool]  # the rows judged: up to and including the first rejection
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
    """Run one round after `steps` (the answer so far); see the module docstring. The target's rows are judged as
    they end: a rejected row ends the rows after it (nothing after a rejection is kept)."""
    if depth < 1:
        raise ValueError(f"lookahead depth must be >= 1, got {depth}")
    t0 = time.perf_counter()
    drafted: list[WrittenStep] = []
    for _ in range(depth):
        step = draft.write(steps + [d.text for d in drafted], max_step_tokens)
        drafted.append(step)
        if step.finished:
            break
    t1 = time.perf_counter()
    texts = [d.text for d in drafted]
    context = target.tokenizer.decode(target.prompt_ids, skip_special_tokens=True) + "".join(steps)
    verdicts: list[bool | None] = [None] * len(drafted)
    judge_s = 0.0

    def keep_going(i: int, theirs: WrittenStep) -> bool:
        nonlocal judge_s
        start = time.perf_counter()
        raw = judge.verdicts(context + "".join(texts[:i]), [(texts[i], theirs.text)])[0]
        verdicts[i] = judged(raw, texts[i], theirs.text)
        judge_s += time.perf_counter() - start
        return verdicts[i]

    theirs = target.write_after_each(steps, texts, max_step_tokens, keep_going)
    t2 = time.perf_counter()
    n = accepted_steps([bool(v) for v in verdicts])
    judged_rows = verdicts[: n + 1] if n < len(drafted) else verdicts
    kept = kept_steps(texts, [t.text if t is not None else "" for t in theirs], n)
    finished = drafted[-1].finished if n == len(drafted) else theirs[n].finished
    pair = None
    if n < len(drafted) and theirs[n].text.strip() and theirs[n].text != texts[n]:
        pair = PreferencePair(tuple(steps + texts[:n]), theirs[n].text, texts[n])
    seconds = {"draft": t1 - t0, "target": t2 - t1 - judge_s, "judge": judge_s}
    return RoundResult(drafted, theirs, [bool(v) for v in judged_rows], n, kept, finished, pair, seconds)
