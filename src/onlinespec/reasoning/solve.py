"""Solve one problem: with one model alone (the target-only and draft-only baselines), or by lookahead reasoning.

Every figure is on the clock: drafting, the target's batched steps, the judge, and (added by the caller) the
draft's update. Tokens are counted in the target's tokenizer for every method, so tokens/s compare.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from onlinespec.prompting import Messages
from onlinespec.reasoning.judges import Judge
from onlinespec.reasoning.lookahead import PreferencePair, lookahead_round
from onlinespec.reasoning.step_writer import StepWriter


@dataclass
class Solution:
    text: str
    steps: list[str]
    tokens: int  # the answer's length in the target's tokens
    finished: bool  # ended by the model (end of sequence), not by the token limit
    seconds: dict[str, float] = field(default_factory=dict)  # total, and draft/target/judge for lookahead
    rounds: int = 0
    drafted: int = 0  # drafted steps judged
    accepted: int = 0  # drafted steps kept
    pairs: list[tuple[list[int], PreferencePair]] = field(default_factory=list)  # (draft context ids, pair)

    @property
    def step_acceptance(self) -> float | None:
        """Accepted drafted steps per verify round (the paper's step acceptance); None without rounds."""
        return self.accepted / self.rounds if self.rounds else None


def target_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def solve_alone(model, tokenizer, problem: str | Messages, max_new_tokens: int, chat: bool = True) -> Solution:
    """Greedy decoding of the whole answer with one model (one prefill, then one token per forward)."""
    t0 = time.perf_counter()
    writer = StepWriter(model, tokenizer, problem, chat)
    written = writer.write([], max_new_tokens, cut_steps=False)
    seconds = time.perf_counter() - t0
    return Solution(written.text, [written.text], written.tokens, written.finished, {"total": seconds})


def solve_lookahead(
    problem: str | Messages,
    draft: tuple[object, object],
    target: tuple[object, object],
    judge: Judge,
    depth: int = 4,
    max_new_tokens: int = 256,
    max_step_tokens: int = 100,
    chat: bool = True,
) -> Solution:
    """Lookahead reasoning rounds until the answer ends or reaches `max_new_tokens` target tokens, then the answer
    cut to that budget (`cut_to_budget`: the last round can keep up to depth + 1 steps past it, and the baselines
    stop at it). `draft` and `target` are (model, tokenizer) pairs; they need not share a tokenizer."""
    t0 = time.perf_counter()
    draft_writer = StepWriter(*draft, problem, chat)
    target_writer = StepWriter(*target, problem, chat)
    steps: list[str] = []
    solution = Solution("", steps, 0, False, {"draft": 0.0, "target": 0.0, "judge": 0.0})
    while not solution.finished and solution.tokens < max_new_tokens:
        result = lookahead_round(steps, draft_writer, target_writer, judge, depth, max_step_tokens)
        for key, value in result.seconds.items():
            solution.seconds[key] += value
        solution.rounds += 1
        solution.drafted += len(result.verdicts)
        solution.accepted += result.accepted
        if result.pair is not None:
            solution.pairs.append((draft_writer.ids_of(list(result.pair.context)), result.pair))
        steps.extend(result.kept)
        solution.finished = result.finished
        solution.text = "".join(steps)
        solution.tokens = target_tokens(target[1], solution.text)
        if not "".join(result.kept) and not result.finished:
            break  # nothing written this round (an empty step that is not an end): stop rather than loop
    solution.seconds["total"] = time.perf_counter() - t0
    return cut_to_budget(solution, target[1], max_new_tokens)


def cut_to_budget(solution: Solution, tokenizer, max_new_tokens: int) -> Solution:
    """The answer's first `max_new_tokens` target tokens, as the baselines write them: text and steps cut there,
    and not finished if its end came after the budget. The time spent past it stays on the clock (the figures
    only get more conservative); drafted and accepted steps are the rounds' as run."""
    if solution.tokens <= max_new_tokens:
        return solution
    ids = tokenizer(solution.text, add_special_tokens=False)["input_ids"][:max_new_tokens]
    text = tokenizer.decode(ids)
    steps, used = [], 0
    for step in solution.steps:
        if used >= len(text):
            break
        steps.append(step[: len(text) - used])
        used += len(steps[-1])
    solution.steps[:] = steps if "".join(steps) == text else [text]  # a decode that is not a prefix: one step
    solution.text, solution.tokens, solution.finished = text, max_new_tokens, False
    return solution
