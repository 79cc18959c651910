"""The round's loss l_t(w) of a draft as a function of its trainable parameters: the learners' gradient oracle.

It runs the DRAFT only (teacher-forced over each request's committed tokens, one forward per request; head drafts
also over the target features stored with them) against the target distributions stored from verification: the
target model is never called here.
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call

from onlinespec.online.feedback_buffer import RequestExamples
from onlinespec.online.learners import GradFn
from onlinespec.online.losses import divergence


def training_copy(model: torch.nn.Module, trainable: list[str]) -> torch.nn.Module:
    """A copy of `model` that owns fresh copies of the `trainable` parameters and shares every other tensor.

    Learners update this copy (possibly in a background thread) while decoding keeps using the live draft;
    publication copies the trainable tensors across at a round boundary.
    """
    named = dict(model.named_parameters())
    keep = set(trainable)
    memo: dict[int, object] = {id(p): p for n, p in named.items() if n not in keep}
    memo.update({id(b): b for b in model.buffers()})
    return copy.deepcopy(model, memo)


class DraftObjective:
    """model: a training copy of draft.model; the draft says how an example becomes logits (`example_terms`)."""

    def __init__(self, draft, model: torch.nn.Module, loss: str = "forward_kl") -> None:
        self.draft = draft
        self.model = model
        self.names = draft.trainable
        self.loss = loss

    def parameters(self) -> list[torch.Tensor]:
        named = dict(self.model.named_parameters())
        return [named[n] for n in self.names]

    def grad_fn(self, examples: list[RequestExamples]) -> GradFn:
        """The oracle for one round's examples: values -> (per-token mean divergence, gradients)."""
        positions = sum(len(e.pred_index) for e in examples)

        def evaluate(values: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
            leaves = [v.detach().requires_grad_(True) for v in values]
            params = dict(zip(self.names, leaves, strict=True))
            with torch.enable_grad():
                total = torch.zeros(())

                def call(**kwargs):
                    return functional_call(self.model, params, args=(), kwargs=kwargs)

                for ex in examples:
                    for weight, logits, rows in self.draft.example_terms(call, ex):
                        # logits [P, Vd] for the examples' positions `rows`; top ids mapped into the draft vocab
                        top_ids = self.draft.draft_ids(torch.stack([ex.top_ids[r] for r in rows]))
                        top_probs = torch.stack([ex.top_probs[r] for r in rows])
                        tail = torch.tensor([ex.tail[r] for r in rows])
                        total = total + weight * divergence(logits, top_ids, top_probs, tail, self.loss)
                loss = total / max(positions, 1)
                grads = torch.autograd.grad(loss, leaves)
            return float(loss.detach()), list(grads)

        return evaluate
