"""Geometry shared by the learners: global L2 norm, gradient clipping, the projection Pi, and the projected step.

Every function treats a list of tensors as ONE vector (all tensors flattened and concatenated), as
`torch.nn.utils.clip_grad_norm_` does. Inputs are never modified; results are new tensors (or the inputs
themselves where nothing changes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def global_norm(tensors: Sequence[torch.Tensor]) -> float:
    """||concat(t.flatten() for t in tensors)||_2 as a python float; 0.0 for an empty list.

    Low-precision tensors (fp16/bf16) are accumulated in fp32, everything else in its own dtype.
    """
    if not tensors:
        return 0.0
    device = tensors[0].device
    norms = [
        torch.linalg.vector_norm(t, dtype=torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else None)
        for t in tensors
    ]
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    return torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms])).item()


@torch.no_grad()
def clip_by_global_norm(grads: Sequence[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], float]:
    """Scale `grads` so their global L2 norm is at most `max_norm` (0 = off) -> (clipped, norm before clipping).

    Rule: g <- g * min(1, max_norm / ||g||), exactly (no epsilon), so a clipped gradient has norm `max_norm`.
    """
    norm = global_norm(grads)
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / norm
        return [g * scale for g in grads], norm
    return list(grads), norm


@torch.no_grad()
def project(values: Sequence[torch.Tensor], center: Sequence[torch.Tensor], radius: float) -> list[torch.Tensor]:
    """Pi: Euclidean projection onto the L2 ball {w : ||w - center|| <= radius}, over all tensors jointly.

    Rule: if d = ||w - center|| > radius then w <- center + (w - center) * radius / d, else w unchanged.
    radius == 0 means "no constraint" (identity), not the single point `center`.
    """
    if radius == 0:
        return list(values)
    offsets = [v - c for v, c in zip(values, center, strict=True)]
    distance = global_norm(offsets)
    if distance <= radius:
        return list(values)
    scale = radius / distance
    return [c + o * scale for c, o in zip(center, offsets, strict=True)]


@torch.no_grad()
def projected_step(
    values: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    lr: float,
    center: Sequence[torch.Tensor],
    radius: float,
) -> list[torch.Tensor]:
    """One projected gradient step Pi(w - lr * g) (new tensors; `values` untouched)."""
    stepped = [v - lr * g for v, g in zip(values, grads, strict=True)]
    return project(stepped, center, radius)


@torch.no_grad()
def relative_change(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> float | None:
    """||after - before|| / ||before|| over all tensors jointly (update_norm_ratio); None when ||before|| = 0."""
    base = global_norm(before)
    if base == 0:
        return None
    return global_norm([a - b for a, b in zip(after, before, strict=True)]) / base
