"""Offline warm-up text (MODELS.md): CPython's own standard-library sources and pydoc topics, and the target's
own greedy answers to warm-up prompts (on-policy text: what the draft will actually be asked to predict).

Everything here is deterministic: files and topics in sorted order, prompts in file order.
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch
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


@torch.inference_mode()
def generate_answers(
    target, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch: int, cache_file: Path
) -> list[list[int]]:
    """prompt + the target's greedy answer (token ids) for every prompt, batched, cached line by line in
    cache_file (JSON lines) so an interrupted warm-up does not regenerate finished answers."""
    done: list[list[int]] = []
    if cache_file.is_file():
        done = [json.loads(line) for line in cache_file.read_text().splitlines() if line.strip()]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with open(cache_file, "a") as fh, tqdm(total=len(prompt_ids), initial=len(done), desc="target answers") as bar:
        for start in range(len(done), len(prompt_ids), batch):
            group = prompt_ids[start : start + batch]
            width = max(len(p) for p in group)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in group])  # left padding
            attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
            out = target.generate(
                input_ids=ids,
                attention_mask=attention,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            for prompt, row in zip(group, out[:, width:].tolist(), strict=True):
                answer = row
                if tokenizer.eos_token_id in answer:  # keep the end-of-turn token, drop the padding after it
                    answer = answer[: answer.index(tokenizer.eos_token_id) + 1]
                sequence = prompt + answer
                fh.write(json.dumps(sequence) + "\n")
                done.append(sequence)
            fh.flush()
            bar.update(len(group))
    return done
