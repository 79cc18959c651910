"""What one verification step tells a learner: the free supervision of docs/method.md §2.

The engine builds a record only when somebody listens, from tensors the verification pass already computed:
no extra target forward, no copies of the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class FeedbackRecord:
    """One verify step of one request. k = number of drafted tokens, V = target vocabulary size.

    Position i (0 <= i <= k) of the verified block predicts the token at absolute index `first_position + 1 + i`
    of `context_ids`, from the context `context_ids[: first_position + 1 + i]`.
    """

    request_id: int
    step: int
    first_position: int  # absolute index of the last committed token before this step
    context_ids: torch.Tensor  # LongTensor [first_position + 1 + k]: committed tokens then the k drafted tokens
    draft_tokens: torch.Tensor  # LongTensor [k]
    target_logits: torch.Tensor  # [k+1, V] raw target logits at the verified positions
    draft_logits: torch.Tensor  # [k, V] raw draft logits the proposal used
    target_probs: torch.Tensor | None  # [k+1, V] processed p (sampling only; greedy uses the logits)
    draft_probs: torch.Tensor | None  # [k, V] processed q (sampling only)
    num_accepted: int  # drafted tokens accepted (0..k); position num_accepted carries the correction/bonus
    target_hidden_states: tuple[torch.Tensor, ...] | None  # per layer [k+1, d], only if the draft asked
    # [first_position + 1 + num_accepted, d]: the target's last-layer features of every committed position that
    # has one (all but the newest token), for drafts that draft from them; None otherwise.
    context_features: torch.Tensor | None = None
    # Which part of the draft proposed the tokens (Proposal.source: a hybrid's "request", "shared" or "head"; ""
    # for drafts with one source): the head of a hybrid trains as deep as IT drafted, not as deep as lookup ran.
    draft_source: str = ""


FeedbackListener = Callable[[FeedbackRecord], None]
