"""What the drafts of feature-level heads share (EAGLE, Medusa, Hydra): the `HeadDraft` base, which makes every
head draft a `TrainableDraft` (online/trainable_draft.py), and the training terms of one request for a head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from onlinespec.drafts.head_protocol import Head, is_unrolled
from onlinespec.online.feedback_buffer import RequestExamples
from onlinespec.online.trainable_draft import ExampleTerm


def head_example_terms(head: Head, call: Callable[..., object], ex: RequestExamples) -> list[ExampleTerm]:
    """Training terms of one request for a feature-level head (online/draft_objective.py).

    ex: RequestExamples with the target's features; its position j carries the target's p for token j + 1.
    The head runs teacher-forced over steps t = 0..m-1 (features f_t, next tokens x_{t+1}); its output i at
    step t matches position t + head.offsets[i]. Returns [(weight, logits [P_i, Vd], example rows)].
    An UnrolledHead (EAGLE) runs `ex.unroll` passes when it is > 0 (the k the request drafted with, weights 0.8^i),
    else its own `unroll`; depth heads (Medusa, Hydra) always train every head depth.
    """
    if ex.features is None or not ex.pred_index:
        return []
    m = min(max(ex.pred_index), ex.features.shape[0], ex.context_ids.numel() - 1)
    if m < 1:
        return []
    offsets, weights = head.offsets, head.loss_weights
    kwargs = {}
    if is_unrolled(head) and ex.unroll > 0:  # train what was drafted: as many passes as drafted tokens
        offsets, weights = head.unrolled_terms(ex.unroll)
        kwargs["unroll"] = ex.unroll
    outputs = call(features=ex.features[None, :m], next_ids=ex.context_ids[None, 1 : m + 1], **kwargs)
    terms = []
    for out, offset, weight in zip(outputs, offsets, weights, strict=True):
        rows = [r for r, j in enumerate(ex.pred_index) if 0 <= j - offset < out.shape[1]]
        if rows:
            terms.append((weight, out[0, [ex.pred_index[r] - offset for r in rows]], rows))
    return terms


class HeadDraft:
    """What the drafts of feature-level heads share: they want the target's features, can draft trees, train
    `head.trainable_names()` online with `head_example_terms`, and map target ids into the head's vocabulary.
    Subclasses keep their own request state (`begin`, `commit`) and drafting (`propose`, `propose_tree`)."""

    wants_target_hidden = True
    supports_tree = True
    model: Head

    def __init__(self, head: Head, name: str) -> None:
        self.model = head
        self.name = name
        self.trainable = head.trainable_names()
        # The target hidden states the engine concatenates into each position's features (decoding/draft.py):
        # the last, normed one for EAGLE, Medusa and Hydra; EAGLE-3 adds three inner layers before it.
        self.feature_layers: tuple[int, ...] = tuple(getattr(head, "feature_layers", (-1,)))

    def example_terms(self, call: Callable[..., object], ex: RequestExamples) -> list[ExampleTerm]:
        return head_example_terms(self.model, call, ex)

    def draft_ids(self, target_ids: torch.Tensor) -> torch.Tensor:
        return self.model.vocab.to_draft_ids(target_ids)

    def target_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The target's features [n, F] -> the target's logits [n, V], through its LM head
        (online/prompt_feedback.py learns from prompt positions with them). The last d columns of every head
        kind's features are the target's last hidden state after its final norm (`feature_layers` ends with -1)."""
        lm_head = self.model.vocab.lm_head
        return lm_head(features[..., -lm_head.weight.shape[1] :])

    def require_features(self, features: torch.Tensor | None) -> torch.Tensor:
        if features is None:
            raise ValueError(f"a {self.model.kind} draft needs the target's features (the engine passes them)")
        return features
