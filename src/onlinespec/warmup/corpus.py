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


def stdlib_files() -> list[Path]:
    """The standard library's .py files (tests and site-packages excluded), sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__"}
    return [path for path in sorted(root.rglob("*.py")) if skip.isdisjoint(path.relative_to(root).parts)]


def stdlib_texts() -> Iterator[str]:
    """The text of each of `stdlib_files()`, in order (unreadable files skipped)."""
    for path in stdlib_files():
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


def generate_answers(
    pipe, prompts: list[str], max_new_tokens: int, cache_file: Path, batch: int = 1
) -> list[list[int]]:
    """prompt + the target's greedy answer (token ids) for every prompt, cached in cache_file (JSON lines keyed by
    the prompt text and the answer budget) so an interrupted warm-up does not regenerate finished answers, and one
    resumed with another --answer-tokens does not reuse answers of the other length (a row written before the
    budget was recorded counts as this budget's).

    batch = 1: our own autoregressive path, exactly what greedy decoding produces. batch > 1: transformers'
    `generate` over left-padded batches of prompts of similar length on the target's device (a GPU, say): the
    same greedy answers up to the rounding of batched kernels, which can part them at near ties. Either way the
    answers are only the text; the teacher passes label every position with the target's exact distribution.
    """
    from onlinespec.decoding.config import GenerationConfig

    done: dict[str, list[int]] = {}
    if cache_file.is_file():
        for line in cache_file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row.get("max_new_tokens", max_new_tokens) == max_new_tokens:
                    done[row["prompt"]] = row["ids"]
    todo = list(dict.fromkeys(p for p in prompts if p not in done))
    encoded = {p: pipe.encode(p) for p in todo}  # LongTensor [T] each
    if batch > 1:  # similar prompt lengths share a batch: little padding
        todo.sort(key=lambda p: len(encoded[p]))
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    with open(cache_file, "a") as fh, tqdm(total=len(todo), desc="target answers") as bar:
        for start in range(0, len(todo), batch):
            group = todo[start : start + batch]
            if batch > 1:
                answers = _batched_answers(pipe, [encoded[p].tolist() for p in group], max_new_tokens)
            else:
                ids = encoded[group[0]]
                answers = [ids.tolist() + pipe.start(ids, cfg, mode="ar").result().token_ids]
            for prompt, ids in zip(group, answers, strict=True):
                done[prompt] = ids
                fh.write(json.dumps({"prompt": prompt, "max_new_tokens": max_new_tokens, "ids": ids}) + "\n")
            fh.flush()
            bar.update(len(group))
    return [done[p] for p in prompts]


def _batched_answers(pipe, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy answers to token-id prompts in one left-padded `generate` call: each row is prompt + answer, the
    answer cut after its first end-of-turn token (kept, as our own decoding keeps it)."""
    import torch

    model = pipe.target.model
    pad = pipe.tokenizer.pad_token_id if pipe.tokenizer.pad_token_id is not None else min(pipe.eos_ids)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=sorted(pipe.eos_ids),
        )
    rows = []
    for prompt, row in zip(prompts, out[:, width:].tolist(), strict=True):
        stop = next((i + 1 for i, t in enumerate(row) if t in pipe.eos_ids), len(row))
        rows.append(prompt + row[:stop])
    return rows
