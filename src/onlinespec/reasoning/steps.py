"""What a reasoning step is: text up to and including a blank line, or at most `MAX_STEP_TOKENS` tokens.

Lookahead reasoning (the paper's Online-LR setting) drafts and verifies whole steps instead of tokens. The step
rule is the paper's: a step ends after the first "\\n\\n" (kept in the step, so steps concatenate back to the
answer), at the model's end of sequence, or after 100 tokens of the model that writes it. A blank line before any
text does not end a step (a step of only newlines would say nothing for a judge to compare).
"""

from __future__ import annotations

STEP_END = "\n\n"
MAX_STEP_TOKENS = 100


def step_end(text: str) -> int | None:
    """Index just past the first STEP_END after some non-whitespace text (the step's length), or None when no step
    ends in `text`."""
    start = len(text) - len(text.lstrip())
    at = text.find(STEP_END, start)
    return None if at < 0 or start == len(text) else at + len(STEP_END)


def split_steps(text: str) -> list[str]:
    """Cut an answer into its steps; "".join(split_steps(t)) == t. A trailing unfinished step is kept as is;
    extra newlines after a blank line stay with the step they end (no empty steps)."""
    steps: list[str] = []
    rest = text
    while rest:
        end = step_end(rest)
        if end is None:
            steps.append(rest)
            break
        while end < len(rest) and rest[end] == "\n":
            end += 1
        steps.append(rest[:end])
        rest = rest[end:]
    return steps
