"""A stream of math word problems for lookahead reasoning, from the `evals` package's data (installed from PyPI),
and the final-answer rule used to score accuracy.

Each source's own system prompt asks for a bare answer (no reasoning), so only the user turn is kept, followed by an
instruction that asks for short steps separated by blank lines and a last line "Answer: <number>". Order: the word
problems first (5th-grade math, multistep, algebra, probabilities), then spoken-number equations, as a user's
stream would drift from one kind of problem to the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from onlinespec.bench.prompts import _package_file, _read_jsonl

INSTRUCTION = (
    "Think step by step: write each step of the calculation as one short paragraph, with a blank line between "
    "steps. End with a last line of the form 'Answer: <number>'."
)
SOURCES = (
    ("grade5", "math_for_5th-grader/samples.jsonl"),
    ("multistep", "multistep-word-problems/samples.jsonl"),
    ("algebra", "algebra_word_problems/samples.jsonl"),
    ("probability", "probabilities-word-problems/samples.jsonl"),
    ("equations", "math_equations/math_equations.jsonl"),
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


@dataclass(frozen=True)
class Problem:
    source: str
    question: str
    gold: str | None  # the dataset's ideal answer, normalised by `answer_value` (None when it has no number)

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{self.question}\n\n{INSTRUCTION}"}]


def answer_value(text: str) -> str | None:
    """The final answer of a text: the number after the last 'Answer:' if there is one, else the last number in
    the text; normalised ("1,440" -> "1440", "16.50" -> "16.5", "3/4" kept as a fraction). None when no number."""
    tail = text.rsplit("Answer:", 1)[-1] if "Answer:" in text else text
    found = _NUMBER.findall(tail) or _NUMBER.findall(text)
    if not found:
        return None
    value = found[0] if "Answer:" in text else found[-1]
    value = value.replace(",", "")
    if "/" in value:
        return value
    number = float(value)
    return str(int(number)) if number == int(number) else f"{number:.4f}".rstrip("0").rstrip(".")


def math_word_problems() -> list[Problem]:
    problems = []
    for source, relative in SOURCES:
        for row in _read_jsonl(_package_file("evals", f"registry/data/{relative}")):
            user = [m["content"] for m in row["input"] if m["role"] == "user"]
            if user:
                problems.append(Problem(source, user[0], answer_value(str(row.get("ideal", "")))))
    return problems
