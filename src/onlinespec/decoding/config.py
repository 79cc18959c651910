"""Per-request generation settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.tree import TreeConfig, check_tree_sampling
from onlinespec.errors import UserError

# Drafted tokens per verify step for a draft that names no default of its own (head drafts, layerskip, an
# independent LM): with the bundled EAGLE head k = 2 beat k = 4 on this project's CPU (1.08x vs 0.79x
# autoregressive, README). The lookup and hybrid drafts default to a longer chain (drafts/registry.py LOOKUP_K).
DEFAULT_K = 2
# Seeds torch.Generator.manual_seed takes: 64 bits, either sign (a negative seed is mapped to 2^64 + seed).
SEED_RANGE = (-(2**63), 2**64 - 1)


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    k: int | None = None  # drafted tokens per verify step (chain length); None = the draft's default
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = 0
    stop: tuple[str, ...] = ()
    tree: TreeConfig = field(default_factory=TreeConfig)  # chain (default) or a static/dynamic draft tree

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise UserError(f"k (drafted tokens per step) must be >= 1, got {self.k}")
        if self.max_new_tokens < 1:
            raise UserError(f"max new tokens must be >= 1, got {self.max_new_tokens}")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise UserError(f"seed must be a 64-bit integer (from -2^63 to 2^64 - 1), got {self.seed}")
        check_tree_sampling(self.tree, self.sampling.greedy)

    def generator(self) -> torch.Generator | None:
        """A seeded CPU generator for sampling; None when greedy (nothing random happens)."""
        return None if self.sampling.greedy else torch.Generator().manual_seed(self.seed)
