"""The round's loss l_t(w) of a draft as a function of its trainable parameters: the learners' gradient oracle.

It runs the DRAFT only (teacher-forced over each request's committed tokens, one forward per request; head drafts
also over the target features stored with them) against the target distributions stored from verification: the
target model is never called here.

Low-precision drafts learn on float32 master weights: a draft that runs in bf16 (the target's dtype under
`--dtype auto` on a CPU with bf16 instructions) gets float32 copies of its trainable parameters in the training
copy. A bf16 weight keeps 8 significant bits, so an update smaller than half its spacing is rounded away: an OGD
step of lr 0.1 on a norm-1 gradient over 4.2 M coordinates (about 5e-5 each) would never move the head at all, and
Adam's ~5e-4 steps would be rounded to 0 or 1 spacing on the larger weights. The loss casts the master values to
the draft's dtype inside the graph, so the forward runs as the draft decodes and the gradient reaches the float32
masters; publication (`live.copy_(master)`) rounds them once per round, and small steps add up in the master.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch.func import functional_call

from onlinespec.online.feedback_buffer import RequestExamples
from onlinespec.online.learners import GradFn
from onlinespec.online.losses import divergence

LOW_PRECISION = (torch.float16, torch.bfloat16)  # trained through float32 master weights


def training_copy(model: torch.nn.Module, trainable: list[str]) -> torch.nn.Module:
    """A copy of `model` that owns fresh copies of the `trainable` parameters and shares every other tensor.

    Learners update this copy (possibly in a background thread) while decoding keeps using the live draft;
    publication copies the trainable tensors across at a round boundary.
    Trainable parameters in fp16/bf16 are copied as float32 (master weights; see the module docstring).
    """
    named = dict(model.named_parameters())
    keep = set(trainable)
    memo: dict[int, object] = {id(p): p for n, p in named.items() if n not in keep}
    memo.update({id(b): b for b in model.buffers()})
    trained = copy.deepcopy(model, memo)
    for name, param in trained.named_parameters():
        if name in keep and param.dtype in LOW_PRECISION:
            param.data = param.data.float()
    return trained


class DraftObjective:
    """model: a training copy of draft.model; the draft says how an example becomes logits (`example_terms`).

    unroll > 0 trains every request of an unrolled head (EAGLE) with that many passes; 0 = as many as the request
    drafted (RequestExamples.unroll). mask_oov drops the positions whose target top-1 token the draft's vocabulary
    lacks (a reduced vocabulary): the head cannot emit it, and their p mass would only push q towards arbitrary
    in-vocabulary tokens through the tail bucket. The per-token mean is over the positions kept.
    """

    def __init__(
        self, draft, model: torch.nn.Module, loss: str = "forward_kl", unroll: int = 0, mask_oov: bool = True
    ) -> None:
        self.draft = draft
        self.model = model
        self.names = draft.trainable
        self.loss = loss
        self.unroll = unroll
        self.mask_oov = mask_oov
        live = dict(draft.model.named_parameters())
        self.run_dtypes = {n: live[n].dtype for n in self.names}  # what the draft decodes in (the masters: fp32)

    def parameters(self) -> list[torch.Tensor]:
        named = dict(self.model.named_parameters())
        return [named[n] for n in self.names]

    def in_vocab(self, ex: RequestExamples) -> list[bool]:
        """Per position of `ex`: whether the draft's vocabulary holds the target's top-1 token (argmax of p)."""
        if not ex.top_ids:
            return []
        top1 = torch.stack([ids[probs.argmax()] for ids, probs in zip(ex.top_ids, ex.top_probs, strict=True)])
        return (self.draft.draft_ids(top1) >= 0).tolist()

    def oov_rate(self, examples: list[RequestExamples]) -> float:
        """Fraction of the examples' positions whose target top-1 token lies outside the draft's vocabulary."""
        flags = [ok for ex in examples for ok in self.in_vocab(ex)]
        return flags.count(False) / len(flags) if flags else 0.0

    def _loss(self, examples: list[RequestExamples], params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The per-token mean divergence (0-dim) of `examples` at parameter values `params`."""

        params = {n: v.to(self.run_dtypes[n]) for n, v in params.items()}  # masters -> the decoding dtype, in the graph

        def call(**kwargs):
            return functional_call(self.model, params, args=(), kwargs=kwargs)

        total, positions = torch.zeros(()), 0
        for ex in examples:
            if self.unroll > 0:
                ex = replace(ex, unroll=self.unroll)
            keep = self.in_vocab(ex) if self.mask_oov else [True] * len(ex.pred_index)
            positions += sum(keep)
            for weight, logits, rows in self.draft.example_terms(call, ex):
                # logits [P, Vd] for the examples' positions `rows`; top ids mapped into the draft vocab
                chosen = [j for j, r in enumerate(rows) if keep[r]]
                if not chosen:
                    continue
                if len(chosen) < len(rows):
                    logits, rows = logits[chosen], [rows[j] for j in chosen]
                top_ids = self.draft.draft_ids(torch.stack([ex.top_ids[r] for r in rows]))
                top_probs = torch.stack([ex.top_probs[r] for r in rows])
                tail = torch.tensor([ex.tail[r] for r in rows])
                total = total + weight * divergence(logits.float(), top_ids, top_probs, tail, self.loss)  # fp32 loss
        return total / max(positions, 1)

    def grad_fn(self, examples: list[RequestExamples]) -> GradFn:
        """The oracle for one round's (or mini-batch's) examples: values -> (per-token mean divergence, gradients)."""

        def evaluate(values: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
            leaves = [v.detach().requires_grad_(True) for v in values]
            with torch.enable_grad():
                loss = self._loss(examples, dict(zip(self.names, leaves, strict=True)))
                if not loss.requires_grad:  # nothing to learn from (every position masked): a zero gradient
                    return float(loss.detach()), [torch.zeros_like(v) for v in values]
                grads = torch.autograd.grad(loss, leaves)
            return float(loss.detach()), list(grads)

        return evaluate

    @torch.no_grad()
    def loss_at(self, examples: list[RequestExamples], values: list[torch.Tensor]) -> float:
        """The loss alone (no gradient) of `examples` at `values`: telemetry (loss before/after an update)."""
        return float(self._loss(examples, dict(zip(self.names, [v.detach() for v in values], strict=True))))
