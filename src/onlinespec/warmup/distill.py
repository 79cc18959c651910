"""Offline distillation of a draft head from the target's teacher outputs (warmup/teacher.py).

Loss: forward KL(p || q) per position on the {top-K, tail} space (online/losses.py), every position of every
sequence, summed over the head's outputs with its loss weights (EAGLE: unrolled passes 0.8^i), averaged per
token. AdamW on the head's trainable tensors only (offline warm-up; the online learners take over afterwards),
at a constant rate or on a cosine schedule over the budget (after a 2 % linear ramp). On a GPU the steps run there
(each teacher batch moved to it; TF32 matrix products, as training on one commonly does). Checkpoints (head +
optimizer + step + elapsed time) are written atomically so an interrupted warm-up resumes where it stopped.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from onlinespec.online.losses import divergence
from onlinespec.warmup.teacher import TeacherBatch


@dataclass
class DistillConfig:
    minutes: float = 20.0  # training time budget (teacher passes not included)
    max_steps: int = 0  # 0 = until the time budget runs out
    lr: float = 5e-4
    clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 25  # steps, and at least CHECKPOINT_SECONDS apart
    schedule: str = "constant"  # or "cosine": lr * 0.5 (1 + cos(pi * progress)), progress = share of the budget
    device: str = "cpu"


SCHEDULES = ("constant", "cosine")
WARMUP_SHARE = 0.02  # the cosine schedule's linear ramp, as a share of the budget
CHECKPOINT_SECONDS = 30.0


def lr_factor(schedule: str, progress: float) -> float:
    """The learning rate's multiplier at `progress` in [0, 1] of the budget (time or steps, whichever is further)."""
    if schedule == "constant":
        return 1.0
    if progress < WARMUP_SHARE:
        return max(progress / WARMUP_SHARE, 0.01)
    return 0.5 * (1.0 + math.cos(math.pi * min((progress - WARMUP_SHARE) / (1 - WARMUP_SHARE), 1.0)))


def choose_draft_vocab(batches: list[TeacherBatch], size: int, always: list[int]) -> tuple[torch.Tensor, float]:
    """The `size` tokens the target most often predicts (top-1 over all warm-up positions), plus `always`.

    Returns (sorted ids, the share of top-1 predictions the vocabulary covers)."""
    counts: Counter[int] = Counter()
    for b in batches:
        valid = torch.arange(b.ids.shape[1])[None] < b.lengths[:, None]
        counts.update(b.top_ids[..., 0][valid].tolist())
    chosen = set(always)
    for token, _ in counts.most_common():
        if len(chosen) >= size:
            break
        chosen.add(token)
    covered = sum(c for t, c in counts.items() if t in chosen) / max(sum(counts.values()), 1)
    return torch.tensor(sorted(chosen), dtype=torch.long), covered


def _aligned(head, batch: TeacherBatch):
    """Run the head teacher-forced over a batch; yield (weight, logits [N, Vd], top ids, top probs, top-1) of
    the valid positions for each of its outputs."""
    features = batch.features.float()
    outputs = head(features[:, :-1], batch.ids[:, 1:])  # step t: (f_t, x_{t+1}), t = 0..T-2
    steps = torch.arange(features.shape[1] - 1, device=features.device)[None]
    for out, offset, weight in zip(outputs, head.offsets, head.loss_weights, strict=True):
        n = min(out.shape[1], batch.ids.shape[1] - offset)
        valid = (steps[:, :n] + offset < batch.lengths[:, None]) & (steps[:, :n] + 1 < batch.lengths[:, None])
        top_ids = batch.top_ids[:, offset : offset + n][valid].long()
        top_probs = batch.top_probs[:, offset : offset + n][valid].float()
        yield weight, out[:, :n][valid], top_ids, top_probs


def batch_loss(head, batch: TeacherBatch) -> tuple[torch.Tensor, int]:
    """(per-token weighted forward KL, number of positions of the first output)."""
    total, count = torch.zeros((), device=batch.ids.device), 0
    for i, (weight, logits, top_ids, top_probs) in enumerate(_aligned(head, batch)):
        tail = (1.0 - top_probs.sum(-1)).clamp_min(0.0)
        total = total + weight * divergence(logits, head.vocab.to_draft_ids(top_ids), top_probs, tail, "forward_kl")
        if i == 0:
            count = logits.shape[0]
    return total / max(count, 1), count


@torch.no_grad()
def agreement(head, batches: list[TeacherBatch]) -> list[float]:
    """Per head output: the share of held-out positions where the head's top-1 equals the target's top-1
    (EAGLE: output 0 drafts from real features = depth 1; output 1 from its own = depth 2 and beyond). Runs on
    the head's device."""
    device = next(head.parameters()).device
    hits: list[int] = []
    totals: list[int] = []
    for batch in (b.to(device) for b in batches):
        for i, (_, logits, top_ids, _) in enumerate(_aligned(head, batch)):
            guess = head.vocab.to_target_ids(logits.argmax(-1))
            if len(hits) <= i:
                hits.append(0)
                totals.append(0)
            hits[i] += int((guess == top_ids[:, 0]).sum())
            totals[i] += top_ids.shape[0]
    return [h / max(t, 1) for h, t in zip(hits, totals, strict=True)]


def _save_checkpoint(directory: Path, head, optimizer, step: int, elapsed_s: float, save_head) -> None:
    save_head(directory / "head")
    state = directory / "trainer.pt"
    tmp = state.with_suffix(".tmp")
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "elapsed_s": elapsed_s}, tmp)
    tmp.rename(state)


def distill(head, train: list[TeacherBatch], cfg: DistillConfig, checkpoint_dir: Path, save_head, resume) -> dict:
    """Train `head` (on cfg.device) on `train` until the time or step budget is spent. save_head(dir) writes the
    head; resume() returns a saved {"optimizer", "step", "elapsed_s"} (after loading the saved head weights) or
    None."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{cfg.schedule}': choose one of {', '.join(SCHEDULES)}")
    head.to(cfg.device)
    named = dict(head.named_parameters())
    params = [named[n] for n in head.trainable_names()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    step, spent = 0, 0.0
    saved = resume()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        step, spent = int(saved["step"]), float(saved.get("elapsed_s", 0.0))
    head.train()
    started = time.monotonic() - spent
    budget_s = cfg.minutes * 60
    last_checkpoint = time.monotonic()
    order: list[int] = []
    losses: list[float] = []
    total = cfg.max_steps if cfg.max_steps > 0 else None
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = str(cfg.device).startswith("cuda")
    try:
        with tqdm(total=total, initial=step, desc="warm-up steps") as bar:
            while time.monotonic() - started < budget_s and (cfg.max_steps <= 0 or step < cfg.max_steps):
                epoch, index = divmod(step, len(train))
                if index == 0 or not order:
                    order = list(range(len(train)))
                    random.Random(cfg.seed * 1000 + epoch).shuffle(order)
                progress = (time.monotonic() - started) / budget_s
                if cfg.max_steps > 0:
                    progress = max(progress, step / cfg.max_steps)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg.schedule, progress)
                with torch.enable_grad():
                    loss, _ = batch_loss(head, train[order[index]].to(cfg.device))
                    grads = torch.autograd.grad(loss, params)
                norm = _clip(grads, cfg.clip)
                for p, g in zip(params, grads, strict=True):
                    p.grad = g
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", grad=f"{norm:.2f}")
                if step % cfg.checkpoint_every == 0 and time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS:
                    _save_checkpoint(checkpoint_dir, head, optimizer, step, time.monotonic() - started, save_head)
                    last_checkpoint = time.monotonic()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    _save_checkpoint(checkpoint_dir, head, optimizer, step, time.monotonic() - started, save_head)
    head.eval()
    return {"steps": step, "final_loss": sum(losses[-20:]) / max(len(losses[-20:]), 1) if losses else None}


def _clip(grads: tuple[torch.Tensor, ...], max_norm: float) -> float:
    """Scale grads in place to global norm <= max_norm; returns the norm before clipping."""
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return norm
