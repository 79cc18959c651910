"""Per-token divergences between the target's p and the draft's q (docs/method.md §2).

p is known only on its top-K ids plus a tail mass, so both distributions are compared on the coarsened space
{top-K ids, everything else}: K+1 outcomes. With K = V (full p) this is the exact divergence. Forward KL(p||q)
(the default) equals the cross-entropy to p up to a constant; reverse KL and JSD are the OSD options. `top1` is
the cross-entropy to the target's most likely token alone, -log q(argmax p): in greedy decoding a drafted token is
accepted exactly when it is that token, so this is the log-likelihood of the event verification rewards (the rest
of p is ignored; for sampled decoding the divergences are the right objectives).
"""

from __future__ import annotations

import torch

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")  # zero exactly when q = p on the coarsened space
LOSSES = (*DIVERGENCES, "top1")
EPS = 1e-8


def coarsened(draft_logits: torch.Tensor, top_ids: torch.Tensor, top_probs: torch.Tensor, tail: torch.Tensor):
    """draft_logits [N, Vd], top_ids [N, K], top_probs [N, K], tail [N] -> (P, log P, Q, log Q), each [N, K+1].

    top_ids index the draft's vocabulary; -1 marks a token the draft cannot produce (a reduced draft vocabulary,
    or a -inf logit): its p mass joins the tail bucket, where the draft's q is what it puts outside the kept ids.
    """
    log_q_all = draft_logits.float().log_softmax(dim=-1)
    log_q_top = log_q_all.gather(-1, top_ids.clamp_min(0))
    impossible = (top_ids < 0) | torch.isneginf(log_q_top)
    log_q_top = log_q_top.masked_fill(impossible, -1e4)  # q = 0 there (exp underflows), gradient-free
    tail = tail + top_probs.masked_fill(~impossible, 0.0).sum(-1)
    top_probs = top_probs.masked_fill(impossible, 0.0)
    q_tail = (1.0 - log_q_top.exp().sum(-1)).clamp_min(EPS)
    log_q = torch.cat([log_q_top, q_tail.log()[:, None]], dim=-1)
    p = torch.cat([top_probs, tail[:, None]], dim=-1)
    return p, p.clamp_min(EPS).log(), log_q.exp(), log_q


def divergence(
    draft_logits: torch.Tensor, top_ids: torch.Tensor, top_probs: torch.Tensor, tail: torch.Tensor, kind: str
) -> torch.Tensor:
    """Summed (not averaged) divergence over the N positions; the caller normalises per token. Returns 0-dim."""
    p, log_p, q, log_q = coarsened(draft_logits, top_ids, top_probs, tail)
    if kind == "forward_kl":  # KL(p || q) = sum p (log p - log q)
        return (p * (log_p - log_q)).sum()
    if kind == "reverse_kl":  # KL(q || p)
        return (q * (log_q - log_p)).sum()
    if kind == "top1":  # -log q(argmax p); top_ids are sorted by p, so column 0; a token the draft cannot emit: 0
        return -(log_q[:, 0] * (p[:, 0] > 0)).sum()
    if kind == "jsd":  # 0.5 KL(p || m) + 0.5 KL(q || m), m = (p + q) / 2
        log_m = ((p + q) / 2).clamp_min(EPS).log()
        return 0.5 * (p * (log_p - log_m)).sum() + 0.5 * (q * (log_q - log_m)).sum()
    raise ValueError(f"unknown loss '{kind}': choose one of {', '.join(LOSSES)}")
