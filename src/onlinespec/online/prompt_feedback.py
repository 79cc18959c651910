"""Free supervision from the prompt: the target's distributions at prompt positions, read off its features.

Verification supervises only the positions a request decodes (tens of tokens), but the prefill already computed
the target's last-layer features f_j of every prompt position, and a head draft keeps them with its feedback
(`RequestExamples.features`). In the HF Llama family those features are taken after the final norm, so
p_j = softmax(LM head(f_j)) is exactly the target's distribution of token j + 1 (tests/test_prompt_feedback.py
checks it against a full forward). Learning from the last `count` prompt positions of each request multiplies a
round's training positions several times over with no extra target forward: the cost is one LM-head product per
position (V x d multiply-adds) in the learner, off the decoding path under the overlap schedule.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol, runtime_checkable

import torch

from onlinespec.online.feedback_buffer import RequestExamples

CHUNK = 256  # prompt positions per LM-head product: bounds the [CHUNK, V] logits held at once


@runtime_checkable
class TargetReadout(Protocol):
    """A draft that can turn the target's stored features into the target's logits (feature-level heads)."""

    def target_logits(self, features: torch.Tensor) -> torch.Tensor:
        """features [n, d] (the target's last-layer features) -> the target's logits [n, V]."""
        ...


@torch.no_grad()
def with_prompt_positions(
    examples: list[RequestExamples], readout: TargetReadout, count: int, top_k: int
) -> tuple[list[RequestExamples], int]:
    """Each request's examples plus its last `count` prompt positions; returns (examples, positions added).

    A request's prompt positions are the prefill's, those before its first verified position (min of pred_index,
    = T for a prompt of T tokens): j = first - count .. first - 1, each predicting token j + 1 (for j = T - 1, the
    first new token, which the prefill emitted). p is kept as the
    feedback buffer keeps it: its `top_k` entries (0 = all) and the tail mass.
    """
    if count <= 0:
        return examples, 0
    out, added = [], 0
    for ex in examples:
        if ex.features is None or not ex.pred_index:
            out.append(ex)
            continue
        first = min(min(ex.pred_index), ex.features.shape[0])
        rows = list(range(max(0, first - count), first))
        if not rows:
            out.append(ex)
            continue
        top_ids, top_probs, tails = [], [], []
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            p = readout.target_logits(ex.features[chunk]).float().softmax(-1)  # [n, V]
            if 0 < top_k < p.shape[-1]:
                probs, ids = p.topk(top_k, dim=-1)
            else:
                probs, ids = p, torch.arange(p.shape[-1]).expand(p.shape[0], -1)
            top_ids += list(ids.clone())
            top_probs += list(probs.clone())
            tails += (1.0 - probs.sum(-1)).clamp_min(0.0).tolist()
        out.append(
            replace(
                ex,
                pred_index=rows + ex.pred_index,
                top_ids=top_ids + ex.top_ids,
                top_probs=top_probs + ex.top_probs,
                tail=tails + ex.tail,
            )
        )
        added += len(rows)
    return out, added
