"""ABLATIONS — NOT the paper's rules (docs/method.md §2): heavy-ball SGD momentum and AdamW, as online learners.

They exist to show what the paper's learners are compared against. Like the paper's learners they clip each
gradient, project onto the ball around w_0, take cfg.passes steps per round, and keep their optimizer state across
rounds forever (the official code's fault of restarting the optimizer every chunk is not repeated).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from onlinespec.online.learners.base import BaseLearner, GradFn, LearnerConfig, assign, restore, snapshot
from onlinespec.online.learners.projection import project, relative_change

ADAMW_EPS = 1e-8  # torch.optim.AdamW's default


class SGDMomentumLearner(BaseLearner):
    """ABLATION, not the paper's rule. Heavy-ball momentum (as torch.optim.SGD, dampening 0, no Nesterov):

    buf <- mu * buf + clip(g)       (buf starts at 0, so the first step is a plain OGD step)
    w   <- Pi(w - eta * buf)
    """

    name = "sgd-momentum"

    def __init__(self, params: Iterable[torch.Tensor], cfg: LearnerConfig) -> None:
        super().__init__(params, cfg)
        self.buf = [torch.zeros_like(p) for p in self.params]

    def update(self, grad_fn: GradFn) -> dict:
        before = snapshot(self.params)
        loss, norm = self.run_passes(grad_fn, self._momentum_step)
        self.round += 1
        change = relative_change(before, self.params)
        return {"round": self.round, "loss": loss, "grad_norm": norm, "update_norm_ratio": change}

    @torch.no_grad()
    def _momentum_step(self, grads: list[torch.Tensor]) -> None:
        cfg = self.cfg
        for b, g in zip(self.buf, grads, strict=True):
            b.mul_(cfg.momentum).add_(g)
        stepped = [w - cfg.lr * b for w, b in zip(self.params, self.buf, strict=True)]
        assign(self.params, project(stepped, self.w0, cfg.radius))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "momentum_buffer": snapshot(self.buf)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        restore(self.buf, state["momentum_buffer"], "momentum_buffer")


class AdamWLearner(BaseLearner):
    """ABLATION, not the paper's rule. AdamW (Loshchilov & Hutter 2019), the update of torch.optim.AdamW:

        s <- s + 1;  w <- w * (1 - eta * weight_decay)
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2          (g = clip(grad))
        w <- Pi(w - (eta / (1 - b1^s)) * m / (sqrt(v / (1 - b2^s)) + eps))
    s counts optimizer steps (passes x rounds), never reset.
    """

    name = "adamw"

    def __init__(self, params: Iterable[torch.Tensor], cfg: LearnerConfig) -> None:
        super().__init__(params, cfg)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.step = 0

    def update(self, grad_fn: GradFn) -> dict:
        before = snapshot(self.params)
        loss, norm = self.run_passes(grad_fn, self._adamw_step)
        self.round += 1
        change = relative_change(before, self.params)
        return {"round": self.round, "loss": loss, "grad_norm": norm, "step": self.step, "update_norm_ratio": change}

    @torch.no_grad()
    def _adamw_step(self, grads: list[torch.Tensor]) -> None:
        cfg = self.cfg
        beta1, beta2 = cfg.betas
        self.step += 1
        step_size = cfg.lr / (1 - beta1**self.step)
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.step)
        stepped = []
        for w, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, strict=True):
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(ADAMW_EPS)
            stepped.append((w * (1 - cfg.lr * cfg.weight_decay)).addcdiv_(m, denom, value=-step_size))
        assign(self.params, project(stepped, self.w0, cfg.radius))

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "exp_avg": snapshot(self.exp_avg),
            "exp_avg_sq": snapshot(self.exp_avg_sq),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        restore(self.exp_avg, state["exp_avg"], "exp_avg")
        restore(self.exp_avg_sq, state["exp_avg_sq"], "exp_avg_sq")
        self.step = int(state["step"])
