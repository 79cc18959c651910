"""Optimistic online gradient descent (the paper's rule, docs/method.md §2; NOT momentum) on a per-coordinate step."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from onlinespec.online.learners.base import BaseLearner, GradFn, LearnerConfig, assign, evaluate, restore, snapshot
from onlinespec.online.learners.projection import global_norm, projected_step, relative_change


class OptimisticLearner(BaseLearner):
    """Optimistic OGD with anchor v and hint h (h_1 = 0, v_1 = w_0, so w_1 = w_0), every step preconditioned with
    the same D (cfg.step; docs/method.md §2, optimistic AdaGrad of Rakhlin & Sridharan 2013):

        decision   w_t     = Pi(v_t - eta D_{t-1}^{-1} h_t)      (the published params during round t)
        feedback   g_t     = clip(grad l_t(w_t))
        anchor     v_{t+1} = Pi(v_t - eta D_t^{-1} g_t)          (D_t has observed g_t: the base OGD step)
        hint       h_{t+1} = hint_ema h_t + (1 - hint_ema) g_t   (hint_ema = 0: h_{t+1} = g_t, the last gradient)
        publish    w_{t+1} = Pi(v_{t+1} - eta D_t^{-1} h_{t+1})

    With `sgd`, D = I: the textbook rule. With `adam` the anchor step's D^{-1} g_t is Adam's m_hat / D (the
    gradient enters through its first moment), so with h = 0 the anchor moves exactly as OGD with the same step.
    The EMA hint is not bias-corrected (it starts at h_1 = 0).

    Telemetry adds "hint_error" = ||g_t - h_t|| (clipped gradient vs hint; small when rounds look alike) and
    "update_norm_ratio" = ||w_{t+1} - w_t|| / ||w_t||.

    With cfg.passes = P > 1, the anchor step is repeated P-1 more times on the same round's feedback, each with the
    gradient re-evaluated at the decision the round would publish if it stopped there, Pi(v - eta D^{-1} h'),
    h' the hint made from the last gradient; the hint h_{t+1} is made from the LAST gradient.
    """

    name = "optimistic"

    def __init__(self, params: Iterable[torch.Tensor], cfg: LearnerConfig) -> None:
        super().__init__(params, cfg)
        self.anchor = snapshot(self.params)  # v_1 = w_0
        self.hint = [torch.zeros_like(p) for p in self.params]  # h_1 = 0
        self.precond = self.new_preconditioner()

    def update(self, grad_fn: GradFn) -> dict:
        cfg = self.cfg
        before = snapshot(self.params)
        loss, grads, norm = evaluate(grad_fn, self.params, cfg.clip)  # g_t at the decision w_t
        with torch.no_grad():
            hint_error = global_norm([g - h for g, h in zip(grads, self.hint, strict=True)])
        self._anchor_step(grads)
        for _ in range(cfg.passes - 1):
            decision = self._decision(self._next_hint(grads))
            _, grads, _ = evaluate(grad_fn, decision, cfg.clip)
            self._anchor_step(grads)
        assign(self.hint, self._next_hint(grads))
        assign(self.params, self._decision(self.hint))
        self.round += 1
        return {
            "round": self.round,
            "loss": loss,
            "grad_norm": norm,
            "hint_error": hint_error,
            "update_norm_ratio": relative_change(before, self.params),
        }

    def _anchor_step(self, grads: list[torch.Tensor]) -> None:
        """v <- Pi(v - eta_t D^{-1} g), D first observing g (eta_t: eta on the warm-up ramp, base.py)."""
        assign(
            self.anchor, projected_step(self.anchor, self.precond.observe(grads), self.eta(), self.w0, self.cfg.radius)
        )

    def _decision(self, hint: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pi(v - eta_t D^{-1} h) with the current anchor and D."""
        return projected_step(self.anchor, self.precond.scale(hint), self.eta(), self.w0, self.cfg.radius)

    @torch.no_grad()
    def _next_hint(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """h' = hint_ema h + (1 - hint_ema) g; the gradient itself when hint_ema = 0."""
        if self.cfg.hint_ema == 0:
            return grads
        return [torch.lerp(g, h, self.cfg.hint_ema) for h, g in zip(self.hint, grads, strict=True)]

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "anchor": snapshot(self.anchor),
            "hint": snapshot(self.hint),
            "preconditioner": self.precond.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        restore(self.anchor, state["anchor"], "anchor")
        restore(self.hint, state["hint"], "hint")
        self.precond.load_state_dict(state.get("preconditioner", {"step": "sgd"}))  # states saved before steps: sgd
