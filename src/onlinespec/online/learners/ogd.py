"""Online gradient descent (docs/method.md §2), with a per-coordinate step (docs/method.md §2, "Adaptive versions")."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from onlinespec.online.learners.base import BaseLearner, GradFn, LearnerConfig, assign, snapshot
from onlinespec.online.learners.projection import projected_step, relative_change


class OGDLearner(BaseLearner):
    """Projected OGD: w_{t+1} = Pi(w_t - eta * D_t^{-1} clip(g_t)), g_t = grad l_t(w_t).

    D_t is cfg.step's preconditioner (preconditioner.py), built from g_1..g_t: `sgd` (D = I, the textbook rule
    w_{t+1} = Pi(w_t - eta g_t)), `adagrad` or `adam` (where the step direction is Adam's m_hat / D). Its state
    persists across rounds and in state_dict().

    With cfg.passes = P > 1 the step is repeated P times on the same round's feedback, each pass re-evaluating
    the gradient at the current iterate (each pass is one observation of the preconditioner). Telemetry
    "loss"/"grad_norm" come from the first evaluation (at w_t); "update_norm_ratio" = ||w_{t+1} - w_t|| / ||w_t||.
    """

    name = "ogd"

    def __init__(self, params: Iterable[torch.Tensor], cfg: LearnerConfig) -> None:
        super().__init__(params, cfg)
        self.precond = self.new_preconditioner()

    def update(self, grad_fn: GradFn) -> dict:
        cfg = self.cfg
        before = snapshot(self.params)
        loss, norm = self.run_passes(
            grad_fn,
            lambda grads: assign(
                self.params, projected_step(self.params, self.precond.observe(grads), self.eta(), self.w0, cfg.radius)
            ),
        )
        self.round += 1
        return {
            "round": self.round,
            "loss": loss,
            "grad_norm": norm,
            "update_norm_ratio": relative_change(before, self.params),
        }

    def state_dict(self) -> dict:
        return {**super().state_dict(), "preconditioner": self.precond.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.precond.load_state_dict(state.get("preconditioner", {"step": "sgd"}))  # states saved before steps: sgd
