"""Draft heads on disk: `model.safetensors` (the trainable tensors, plus `draft_vocab_ids` when the vocabulary is
reduced) and `config.json` (kind, the target it was trained for, sizes, and how it was made).

Written to a temporary directory and renamed into place, so a crash never leaves a half-written head.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from onlinespec.atomic import atomic_directory
from onlinespec.drafts.head_protocol import Head
from onlinespec.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB_KEY = "draft_vocab_ids"


def head_config(head: Head, target: nn.Module, extra: dict | None = None) -> dict:
    cfg = target.config
    return {
        "format": "onlinespec-head",
        "kind": head.kind,
        "target_architecture": (cfg.architectures or [type(target).__name__])[0],
        "target_model_type": cfg.model_type,
        "hidden_size": cfg.hidden_size,
        "target_vocab_size": head.vocab.target_vocab,
        "draft_vocab_size": head.vocab.size,
        **head.store_config(),
        **(extra or {}),
    }


def save_head(directory: str | Path, head: Head, target: nn.Module, extra: dict | None = None) -> Path:
    """Atomically write `head` (its trainable tensors) and its config to `directory` (replaced if present)."""
    directory = Path(directory)
    named = dict(head.named_parameters())
    tensors = {n: named[n].detach().contiguous().clone() for n in head.trainable_names()}
    if head.vocab.reduced:
        tensors[VOCAB_KEY] = head.vocab.ids.clone()
    with atomic_directory(directory) as tmp:
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(head_config(head, target, extra), indent=2) + "\n")
    return directory


def read_head(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) of a saved head; a clear error when the directory is not one."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise UserError(
            f"'{directory}' is not a draft head directory (it needs {CONFIG} and {WEIGHTS}); "
            "make one with `onlinespec warmup --out DIR`"
        )
    config = json.loads((directory / CONFIG).read_text())
    return config, load_file(str(directory / WEIGHTS))


def load_into(head: Head, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved trainable tensors into `head`, checking names and shapes."""
    named = dict(head.named_parameters())
    expected = set(head.trainable_names())
    got = set(tensors) - {VOCAB_KEY}
    if got != expected:
        raise UserError(f"head in '{source}' does not match this head layout (missing or extra tensors)")
    with torch.no_grad():
        for name in expected:
            if named[name].shape != tensors[name].shape:
                raise UserError(
                    f"head in '{source}' was trained for another target: {name} has shape "
                    f"{tuple(tensors[name].shape)}, this target needs {tuple(named[name].shape)}"
                )
            named[name].copy_(tensors[name])
