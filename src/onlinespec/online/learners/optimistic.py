"""Optimistic online gradient descent — the paper's rule (docs/method.md §2), NOT momentum."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from onlinespec.online.learners.base import BaseLearner, GradFn, LearnerConfig, assign, evaluate, restore, snapshot
from onlinespec.online.learners.projection import global_norm, projected_step


class OptimisticLearner(BaseLearner):
    """Optimistic OGD with anchor v and hint h (h_1 = 0, v_1 = w_0, so w_1 = w_0):

        decision   w_t     = Pi(v_t - eta h_t)           (the published params during round t)
        feedback   g_t     = clip(grad l_t(w_t))
        anchor     v_{t+1} = Pi(v_t - eta g_t)
        hint       h_{t+1} = g_t
        publish    w_{t+1} = Pi(v_{t+1} - eta h_{t+1})

    Telemetry adds "hint_error" = ||g_t - h_t|| (clipped gradient vs hint; small when rounds look alike).

    With cfg.passes = P > 1, the anchor step is repeated P-1 more times on the same round's feedback, each with the
    gradient re-evaluated at the current decision Pi(v - eta g_last); the hint h_{t+1} is the LAST gradient.
    """

    name = "optimistic"

    def __init__(self, params: Iterable[torch.Tensor], cfg: LearnerConfig) -> None:
        super().__init__(params, cfg)
        self.anchor = snapshot(self.params)  # v_1 = w_0
        self.hint = [torch.zeros_like(p) for p in self.params]  # h_1 = 0

    def update(self, grad_fn: GradFn) -> dict:
        cfg = self.cfg
        loss, grads, norm = evaluate(grad_fn, self.params, cfg.clip)  # g_t at the decision w_t
        with torch.no_grad():
            hint_error = global_norm([g - h for g, h in zip(grads, self.hint, strict=True)])
        assign(self.anchor, projected_step(self.anchor, grads, cfg.lr, self.w0, cfg.radius))
        for _ in range(cfg.passes - 1):
            decision = projected_step(self.anchor, grads, cfg.lr, self.w0, cfg.radius)
            _, grads, _ = evaluate(grad_fn, decision, cfg.clip)
            assign(self.anchor, projected_step(self.anchor, grads, cfg.lr, self.w0, cfg.radius))
        assign(self.hint, grads)
        assign(self.params, projected_step(self.anchor, self.hint, cfg.lr, self.w0, cfg.radius))
        self.round += 1
        return {"round": self.round, "loss": loss, "grad_norm": norm, "hint_error": hint_error}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "anchor": snapshot(self.anchor), "hint": snapshot(self.hint)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        restore(self.anchor, state["anchor"], "anchor")
        restore(self.hint, state["hint"], "hint")
