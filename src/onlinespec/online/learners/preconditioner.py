"""Per-coordinate steps D_t^{-1} for the paper's learners (docs/method.md §2, "Adaptive versions").

A preconditioner folds each clipped gradient into its state (`observe`) and returns the step direction u_t that the
learner scales by eta; `scale(x)` applies the current D^{-1} to another vector (the optimistic hint). D is built from
the gradients observed so far only, so the decision published after round t is known before round t+1's loss.

    sgd      u = g                                        D = I (the textbook OGD step; returns g itself)
    adagrad  G <- G + g^2;  u = g / (sqrt(G) + eps)       D = sqrt(G) + eps          (Duchi, Hazan & Singer 2011)
    adam     s <- s + 1;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2           (Kingma & Ba 2015)
             D = sqrt(v / (1 - b2^s)) + eps;  u = (m / (1 - b1^s)) / D     (bias-corrected, as torch.optim.Adam)

For adam the gradient enters u through its bias-corrected first moment, as in Adam itself. State is kept in fp32
for fp16/bf16 parameters (a sum of squares in bf16 stops growing), in the parameter's dtype otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from onlinespec.errors import UserError


def _state_like(p: torch.Tensor) -> torch.Tensor:
    """A zero tensor shaped like `p`, fp32 when `p` is fp16/bf16."""
    low = p.dtype in (torch.float16, torch.bfloat16)
    return torch.zeros_like(p, dtype=torch.float32 if low else p.dtype)


def _restore(dst: list[torch.Tensor], saved: list[torch.Tensor], what: str) -> None:
    if len(saved) != len(dst) or any(s.shape != d.shape for s, d in zip(saved, dst, strict=True)):
        raise UserError(f"preconditioner state '{what}' does not match this draft: load a state saved for it")
    with torch.no_grad():
        for d, s in zip(dst, saved, strict=True):
            d.copy_(s)


class Preconditioner:
    """The identity step `sgd`: u = g, D^{-1} x = x (the very tensors passed in, so OGD is bit-for-bit unchanged)."""

    name = "sgd"

    def __init__(self, params: Sequence[torch.Tensor], eps: float, betas: tuple[float, float]) -> None:
        self.eps = eps
        self.betas = betas

    def observe(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Fold the clipped gradient g_t into the state; return the step direction u_t (shapes of the params)."""
        return grads

    def scale(self, vectors: list[torch.Tensor]) -> list[torch.Tensor]:
        """D^{-1} x with the current state (x: a list shaped like the params)."""
        return vectors

    def state_dict(self) -> dict:
        return {"step": self.name}

    def load_state_dict(self, state: dict) -> None:
        if state.get("step") != self.name:
            raise UserError(
                f"learner state was saved with step '{state.get('step')}', not '{self.name}': "
                f"set step={state.get('step')} to resume it"
            )


class AdaGrad(Preconditioner):
    """G <- G + g^2;  u = g / (sqrt(G) + eps);  D = sqrt(G) + eps   (G starts at 0, never reset)."""

    name = "adagrad"

    def __init__(self, params: Sequence[torch.Tensor], eps: float, betas: tuple[float, float]) -> None:
        super().__init__(params, eps, betas)
        self.sum_sq = [_state_like(p) for p in params]  # G, one entry per coordinate

    @torch.no_grad()
    def observe(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        for acc, g in zip(self.sum_sq, grads, strict=True):
            g = g.to(acc.dtype)
            acc.addcmul_(g, g)
        return self.scale(grads)

    @torch.no_grad()
    def scale(self, vectors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x / (acc.sqrt() + self.eps) for x, acc in zip(vectors, self.sum_sq, strict=True)]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "sum_sq": [t.clone() for t in self.sum_sq]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        _restore(self.sum_sq, state["sum_sq"], "sum_sq")


class Adam(Preconditioner):
    """s <- s+1; m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; D = sqrt(v/(1-b2^s)) + eps; u = m/(1-b1^s) / D."""

    name = "adam"

    def __init__(self, params: Sequence[torch.Tensor], eps: float, betas: tuple[float, float]) -> None:
        super().__init__(params, eps, betas)
        self.exp_avg = [_state_like(p) for p in params]  # m
        self.exp_avg_sq = [_state_like(p) for p in params]  # v
        self.steps = 0  # s: gradients observed (passes x rounds), never reset

    @torch.no_grad()
    def observe(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        beta1, beta2 = self.betas
        self.steps += 1
        for m, v, g in zip(self.exp_avg, self.exp_avg_sq, grads, strict=True):
            g = g.to(m.dtype)
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias1 = 1 - beta1**self.steps
        return [(m / bias1) / d for m, d in zip(self.exp_avg, self._denominators(), strict=True)]

    @torch.no_grad()
    def scale(self, vectors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x / d for x, d in zip(vectors, self._denominators(), strict=True)]

    def _denominators(self) -> list[torch.Tensor]:
        """D = sqrt(v) / sqrt(1 - b2^s) + eps (D = eps before any gradient, where v = 0)."""
        bias2_sqrt = math.sqrt(1 - self.betas[1] ** self.steps) if self.steps else 1.0
        return [(v.sqrt() / bias2_sqrt).add_(self.eps) for v in self.exp_avg_sq]

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        _restore(self.exp_avg, state["exp_avg"], "exp_avg")
        _restore(self.exp_avg_sq, state["exp_avg_sq"], "exp_avg_sq")
        self.steps = int(state["steps"])


PRECONDITIONERS: dict[str, type[Preconditioner]] = {cls.name: cls for cls in (Preconditioner, AdaGrad, Adam)}


def make_preconditioner(
    step: str, params: Sequence[torch.Tensor], eps: float, betas: tuple[float, float]
) -> Preconditioner:
    """The preconditioner `step` (sgd | adagrad | adam) over parameters shaped like `params`, with empty state."""
    if step not in PRECONDITIONERS:
        raise UserError(f"unknown step '{step}': choose one of {', '.join(PRECONDITIONERS)}")
    return PRECONDITIONERS[step](params, eps, betas)
