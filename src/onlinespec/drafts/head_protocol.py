"""What a feature-level draft head module must offer: the `Head` protocol.

A head is an `nn.Module` built as `HeadClass(target, vocab_ids=None, **layout)` (target: the transformers causal
LM whose frozen parts it shares; vocab_ids: LongTensor [Vd] of a reduced draft vocabulary, or None for the
target's full one; layout: the settings named in `layout_keys`). Its consumers and what each one reads:
- head drafts (drafts/head_draft.py HeadDraft): `kind`, `vocab`, `trainable_names()`, and for online learning
  (`head_example_terms`) the teacher-forced call with `offsets` and `loss_weights`;
- the head store (drafts/head_store.py) and head loading (drafts/heads.py): `kind`, `layout_keys`,
  `store_config()`, `trainable_names()`, `vocab` (`target_vocab`, `size`, `reduced`, `ids`), `named_parameters()`;
- warm-up distillation (warmup/distill.py): the teacher-forced call, `offsets`, `loss_weights`, `vocab`
  (`to_draft_ids`, `to_target_ids`), `trainable_names()`, `named_parameters()`; and `unroll` when the head is an
  `UnrolledHead`;
- export (export.py) reads a saved head's config.json only (`kind`, `layout`, sizes), never the module.

How each kind drafts (EagleHead.step, DepthHead.step_logits) is between the kind and its own draft class.
B = batch, T = steps, d = the target's hidden size, Vd = the draft vocabulary size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from onlinespec.drafts.head_parts import DraftVocab


@runtime_checkable
class Head(Protocol):
    """A draft head over the target's last-layer features (EAGLE, Medusa, Hydra)."""

    kind: str  # the registry name of the kind ("eagle"), saved in config.json
    layout_keys: tuple[str, ...]  # constructor settings saved in config.json and passed back when loading
    vocab: DraftVocab  # the output vocabulary: the target's, or a reduced subset of Vd ids

    @property
    def offsets(self) -> tuple[int, ...]:
        """Per output i of the teacher-forced call: row t matches the target's p at position t + offsets[i]."""
        ...

    @property
    def loss_weights(self) -> tuple[float, ...]:
        """Per output i: the weight of its loss term (online learning and warm-up alike)."""
        ...

    def __call__(self, features: torch.Tensor, next_ids: torch.Tensor) -> list[torch.Tensor]:
        """Teacher-forced pass. features [B, T, d] = the target's f_0..f_{T-1} (after its final norm);
        next_ids [B, T] = x_1..x_T. Returns one tensor [B, T_i, Vd] per output (T_i <= T), aligned by `offsets`."""
        ...

    def trainable_names(self) -> list[str]:
        """Names (in `named_parameters()`) of the head's own trainable tensors; everything else is the target's."""
        ...

    def store_config(self) -> dict:
        """The values of `layout_keys`, saved beside the weights."""
        ...

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """nn.Module's: every parameter, the target's frozen shared ones included."""
        ...


@runtime_checkable
class UnrolledHead(Head, Protocol):
    """A head trained on its own outputs for `unroll` passes (EAGLE's training-time test): `len(offsets)`
    follows `unroll`, which warm-up sets before training (and the head store keeps). Its teacher-forced call also
    takes `unroll=n` (n passes, whatever the attribute), whose terms `unrolled_terms(n)` gives: online learning
    trains each request as deep as it drafted."""

    unroll: int

    def unrolled_terms(self, unroll: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """(offsets, loss_weights) of the teacher-forced call with `unroll` passes."""
        ...


def is_unrolled(head: object) -> bool:
    """Whether `head` is an UnrolledHead. Not `isinstance(head, UnrolledHead)`: from Python 3.12 a runtime protocol
    check looks attributes up statically, which misses what nn.Module keeps in `_modules` (`vocab`), so every
    head module fails it there (warm-up then trained EAGLE with one pass instead of --unroll)."""
    return isinstance(getattr(head, "unroll", None), int) and callable(getattr(head, "unrolled_terms", None))
