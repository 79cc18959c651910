"""Verification of a drafted chain against the target's distributions (docs/method.md §1).

Both functions take the target's scores at the k+1 positions that one target forward over
[last committed token, d_1 .. d_k] produces, and return (number of drafted tokens accepted, the next token).
Everything is tensor ops; the single host sync is the caller's `.item()` on the result.
"""

from __future__ import annotations

import torch

from onlinespec.decoding.sampling import sample


def verify_greedy(target_logits: torch.Tensor, draft_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy rule: accept d_i iff d_i == argmax p_i; at the first mismatch emit argmax p_i; if all k match,
    emit the bonus argmax p_{k+1}.

    target_logits: [k+1, V]; draft_tokens: LongTensor [k]. Returns (n_accepted: 0-dim long, next_token: 0-dim long).
    """
    target_choice = target_logits.argmax(dim=-1)  # [k+1]
    k = draft_tokens.shape[0]
    n_accepted = (draft_tokens == target_choice[:k]).long().cumprod(dim=0).sum()
    return n_accepted, target_choice[n_accepted]


def verify_sampling(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor,
    draft_tokens: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact speculative sampling (Leviathan et al. 2023; Chen et al. 2023).

    Accept d_i ~ q_i with probability min(1, p_i(d_i) / q_i(d_i)); at the first rejection sample from the
    residual norm(max(0, p_i - q_i)) and stop; if all k are accepted, sample the bonus from p_{k+1}.
    The emitted tokens are then distributed exactly as the target's own samples.

    target_probs: [k+1, V]; draft_probs: [k, V] (q, after the same processing as p); draft_tokens: [k].
    Returns (n_accepted: 0-dim long, next_token: 0-dim long).
    """
    k = draft_tokens.shape[0]
    rows = torch.arange(k, device=draft_tokens.device)
    p_of_draft = target_probs[rows, draft_tokens]
    q_of_draft = draft_probs[rows, draft_tokens]
    u = torch.rand(k, generator=generator, device=draft_tokens.device)
    accepted = u * q_of_draft <= p_of_draft  # u <= p/q without dividing by a possibly tiny q
    n_accepted = accepted.long().cumprod(dim=0).sum()
    if int(n_accepted) == k:
        return n_accepted, sample(target_probs[k : k + 1], generator)[0]
    residual = (target_probs[n_accepted] - draft_probs[n_accepted]).clamp_min(0)
    mass = residual.sum()
    # mass == 0 only when p == q exactly, where rejection has probability 0; fall back to p for safety.
    residual = residual / mass if mass > 0 else target_probs[n_accepted]
    return n_accepted, sample(residual[None], generator)[0]
