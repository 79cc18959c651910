"""A broad pool of warm-up prompts, for a head that meets many kinds of request during its warm-up: a few rows of
every chat dataset in the `evals` package's registry (installed from PyPI, docs/models.md), and coding requests
made from the docstrings of CPython's standard library (what a code assistant is asked; HumanEval-like).

Kept out, so that no benchmark decodes a prompt or a domain the head was warmed on: every file a benchmark stream
reads (bench/prompts.py: Spider, finance, summaries, math; HumanEval and WritingBench come from other packages),
the reasoning problems (reasoning/problems.py), and every dataset whose folder names summaries or writing (the
domains the online benchmarks keep unseen).

Deterministic: files in sorted order, rows at an even stride through each file. `python -m
onlinespec.warmup.prompt_pool OUT.jsonl` writes the pool as chat rows `onlinespec warmup --prompts` reads; a machine
without `evals` (a GPU box, say) then warms up from that file.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from onlinespec.bench.prompts import _package_file, _read_jsonl
from onlinespec.warmup.corpus import stdlib_files

EXCLUDED_FILES = (
    "sql/spider_sql.jsonl",
    "finance_calc/samples.jsonl",
    "consensus_summary/samples.jsonl",
    "math_equations/math_equations.jsonl",
    "simple_math/simple_math.jsonl",
    "math_for_5th-grader/samples.jsonl",
    "multistep-word-problems/samples.jsonl",
    "algebra_word_problems/samples.jsonl",
    "probabilities-word-problems/samples.jsonl",
)
EXCLUDED_WORDS = ("summar", "writing")  # folder names of the domains the online benchmarks keep unseen
PER_FILE = 16  # rows taken from each dataset
MAX_CHARS = 3000  # longer prompts are skipped (prefill cost; the answer is what the head learns most from)
CODE_PROMPTS = 2000  # coding requests from standard-library docstrings


def _row_text(row: dict) -> str | None:
    """The request of an `evals` chat row as one user turn: its system turn (the task, in many datasets) and its
    first user turn, joined by a blank line; None when the row has no chat input."""
    messages = row.get("input")
    if not isinstance(messages, list):
        return None
    turns = {}
    for m in messages:
        if isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ("system", "user"):
            turns.setdefault(m["role"], m["content"].strip())
    text = "\n\n".join(t for t in (turns.get("system"), turns.get("user")) if t)
    return text or None


def pool_prompts(per_file: int = PER_FILE, max_chars: int = MAX_CHARS) -> list[str]:
    """Up to `per_file` prompts from each allowed registry dataset, rows at an even stride, files sorted."""
    root = _package_file("evals", "registry/data", folder=True)
    prompts: list[str] = []
    for path in sorted(root.rglob("*.jsonl")):
        relative = path.relative_to(root).as_posix()
        if relative in EXCLUDED_FILES or any(w in relative.lower() for w in EXCLUDED_WORDS):
            continue
        try:
            rows = _read_jsonl(path)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        texts = [t for t in (_row_text(r) for r in rows if isinstance(r, dict)) if t and len(t) <= max_chars]
        stride = max(len(texts) // per_file, 1)
        prompts += texts[::stride][:per_file]
    return prompts


def code_prompts(limit: int = CODE_PROMPTS) -> list[str]:
    """ "Write a Python function `name(args)` that ..." for public functions and methods of the standard library's
    modules with a docstring (its first paragraph is the task), read with `ast` (nothing imported), at an even
    stride."""
    tasks: list[str] = []
    for path in stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        methods = [n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body]
        for node in tree.body + methods:
            doc = ast.get_docstring(node) if isinstance(node, ast.FunctionDef) else None
            if not doc or node.name.startswith("_"):
                continue
            task = doc.strip().split("\n\n")[0].strip()
            if len(task) >= 40:
                signature = f"{node.name}({ast.unparse(node.args)})"
                tasks.append(f"Write a Python function `{signature}` that does the following:\n\n{task}")
    stride = max(len(tasks) // limit, 1)
    return tasks[::stride][:limit]


def write_pool(path: str | Path, per_file: int = PER_FILE, code: int = CODE_PROMPTS) -> int:
    """Write the pool (evals rows, then coding requests) as JSON lines {"messages": [{"role": "user", "content":
    ...}]}; returns the row count."""
    prompts = pool_prompts(per_file) + code_prompts(code)
    rows = (json.dumps({"messages": [{"role": "user", "content": p}]}) for p in prompts)
    Path(path).write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return len(prompts)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m onlinespec.warmup.prompt_pool OUT.jsonl")
    print(f"{write_pool(sys.argv[1])} prompts written to {sys.argv[1]}")
