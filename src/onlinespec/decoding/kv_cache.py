"""KV-cache creation and rollback on top of transformers' DynamicCache (the public cache API, no patched models)."""

from __future__ import annotations

import torch
from transformers import DynamicCache


def new_cache(model: torch.nn.Module) -> DynamicCache:
    return DynamicCache(config=model.config)


def rollback(cache: DynamicCache, length: int) -> None:
    """Drop every cached position at index >= `length`.

    Uses `crop(-n)`: `crop(L)` with a positive L raises in some transformers releases (docs/models.md).
    """
    excess = cache.get_seq_length() - length
    if excess > 0:
        cache.crop(-excess)
