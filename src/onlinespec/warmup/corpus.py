"""Offline warm-up text (docs/models.md): CPython's own standard-library sources and pydoc topics, and the target's
own greedy answers to warm-up prompts (on-policy text: what the draft will actually be asked to predict).

Everything here is deterministic: files and topics in sorted order, prompts in file order.
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

SOURCES = ("answers", "stdlib", "pydoc")


def stdlib_texts() -> Iterator[str]:
    """The standard library's .py files (tests and site-packages excluded), sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__"}
    for path in sorted(root.rglob("*.py")):
        if skip.isdisjoint(path.relative_to(root).parts):
            try:
                yield path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue


def pydoc_texts() -> Iterator[str]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]


def chunked_token_sequences(texts: Iterator[str], tokenizer, seq_len: int, max_tokens: int) -> list[list[int]]:
    """Tokenise texts one after another and cut the stream into sequences of seq_len tokens, up to max_tokens."""
    sequences: list[list[int]] = []
    buffer: list[int] = []
    total = 0
    for text in texts:
        buffer.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        while len(buffer) >= seq_len and total < max_tokens:
            sequences.append(buffer[:seq_len])
            buffer = buffer[seq_len:]
            total += seq_len
        if total >= max_tokens:
            break
    return sequences


def generate_answers(pipe, prompts: list[str], max_new_tokens: int, cache_file: Path) -> list[list[int]]:
    """prompt + the target's greedy answer (token ids) for every prompt, decoded by our own autoregressive
    path (exactly what greedy decoding produces), cached in cache_file (JSON lines keyed by the prompt text) so
    an interrupted warm-up does not regenerate finished answers."""
    from onlinespec.decoding.config import GenerationConfig

    done: dict[str, list[int]] = {}
    if cache_file.is_file():
        for line in cache_file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["prompt"]] = row["ids"]
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    with open(cache_file, "a") as fh:
        for prompt in tqdm([p for p in prompts if p not in done], desc="target answers"):
            prompt_ids = pipe.encode(prompt)
            result = pipe.generate(prompt, cfg, mode="ar")
            done[prompt] = prompt_ids.tolist() + result.token_ids
            fh.write(json.dumps({"prompt": prompt, "ids": done[prompt]}) + "\n")
            fh.flush()
    return [done[p] for p in prompts]
