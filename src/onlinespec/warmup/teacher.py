"""Teacher-forced target passes over warm-up sequences: the target's features (the hidden states a head reads,
`feature_layers`: the last layer's for EAGLE, Medusa, Hydra; three inner layers and the last for EAGLE-3) and its
top-K next-token distribution at every position, computed in batches once and kept (fp16 features) for many
training epochs.

Per token: F * 2 bytes of features (F = d * len(feature_layers)) + K * 6 bytes of top-K (int32 ids, fp16 probs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from onlinespec.drafts.head_parts import decoder_of


@dataclass
class TeacherBatch:
    """B sequences right-padded to T. Position t's p is the target's distribution of token t + 1."""

    ids: torch.Tensor  # LongTensor [B, T]
    lengths: torch.Tensor  # LongTensor [B]
    features: torch.Tensor  # float16 [B, T, F]
    top_ids: torch.Tensor  # int32 [B, T, K]
    top_probs: torch.Tensor  # float16 [B, T, K]

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    def to(self, device: str | torch.device) -> TeacherBatch:
        """The same batch with every tensor on `device` (a training step on a GPU reads it there)."""
        return TeacherBatch(**{name: value.to(device) for name, value in self.__dict__.items()})


@torch.inference_mode()
def teacher_pass(
    target, sequences: list[list[int]], top_k: int, pad_id: int, feature_layers: tuple[int, ...] = (-1,)
) -> TeacherBatch:
    """One batched target forward (no KV cache, causal, right padding) over `sequences`; features = the hidden
    states `feature_layers` (transformers' `hidden_states` indices, -1 = the last, normed) concatenated."""
    width = max(len(s) for s in sequences)
    device = next(target.parameters()).device  # the passes run where the target is; the batch lands on the CPU
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in sequences], device=device)
    last_only = tuple(feature_layers) == (-1,)
    out = decoder_of(target)(input_ids=ids, use_cache=False, output_hidden_states=not last_only)
    hidden = out.last_hidden_state  # [B, T, d]
    features = hidden if last_only else torch.cat([out.hidden_states[i] for i in feature_layers], dim=-1)
    lm_head = target.get_output_embeddings()
    top_ids, top_probs = [], []
    for row in hidden:  # one sequence at a time keeps the [T, V] logits small
        probs = lm_head(row).float().softmax(-1)
        values, index = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        top_ids.append(index.int())
        top_probs.append(values.half())
    return TeacherBatch(
        ids=ids.cpu(),
        lengths=torch.tensor([len(s) for s in sequences]),
        features=features.half().cpu(),
        top_ids=torch.stack(top_ids).cpu(),
        top_probs=torch.stack(top_probs).cpu(),
    )


def teacher_batches(
    target,
    sequences: list[list[int]],
    batch_tokens: int,
    top_k: int,
    pad_id: int,
    cache_dir: Path,
    feature_layers: tuple[int, ...] = (-1,),
) -> list[TeacherBatch]:
    """Teacher outputs for all sequences (sorted by length into batches of about `batch_tokens` tokens), each
    batch saved to cache_dir/batch-NNNNN.pt so a resumed warm-up skips the finished ones."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    groups: list[list[int]] = [[]]
    for i in order:
        width = max([len(sequences[j]) for j in groups[-1]] + [len(sequences[i])])
        if groups[-1] and width * (len(groups[-1]) + 1) > batch_tokens:
            groups.append([])
        groups[-1].append(i)
    out = []
    for n, group in enumerate(tqdm(groups, desc="teacher passes")):
        path = cache_dir / f"batch-{n:05d}.pt"
        if path.is_file():
            out.append(TeacherBatch(**torch.load(path)))
            continue
        batch = teacher_pass(target, [sequences[i] for i in group], top_k, pad_id, feature_layers)
        tmp = path.with_suffix(".tmp")
        torch.save(batch.__dict__, tmp)
        tmp.rename(path)
        out.append(batch)
    return out
