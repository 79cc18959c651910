"""Online ensemble: Hedge over OGD experts on a geometric learning-rate grid (docs/method.md §2, Ader-style)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from onlinespec.errors import UserError
from onlinespec.online.learners.base import BaseLearner, GradFn, LearnerConfig, assign, evaluate, restore, snapshot
from onlinespec.online.learners.projection import projected_step


def hedge_weights(cumulative_losses: list[float], gamma: float) -> list[float]:
    """p_i = softmax(-gamma * L)_i, computed stably in float64 (subtract the max logit)."""
    logits = [-gamma * loss for loss in cumulative_losses]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


class EnsembleLearner(BaseLearner):
    """N = cfg.experts independent OGD experts, expert i with eta_i = cfg.lr * cfg.lr_ratio**i, all starting at w_0.

    Each round, every expert i is evaluated at ITS OWN iterate w_{t,i} (grad_fn(expert values)):
        loss_i, g_i = l_t(w_{t,i}), grad            w_{t+1,i} = Pi(w_{t,i} - eta_i clip(g_i))   (cfg.passes steps)
        L_i += loss_i                               (per-token losses, so gamma has a stable meaning)
        p_{t+1} = softmax(-gamma L)                 published w_{t+1} = sum_i p_{t+1,i} w_{t+1,i}
    The average of points in the ball around w_0 stays in it, so the published draft needs no extra projection.

    Telemetry: the loss of the published decision w_t itself is NOT evaluated (one more evaluation per round);
    "loss" is the weighted expert loss sum_i p_{t,i} loss_i with the weights in force during the round, and
    "grad_norm" likewise sum_i p_{t,i} ||g_i|| (before clipping). Also: "weights" (p_{t+1}), "cumulative_losses",
    "effective_experts" = 1 / sum_i p_{t+1,i}^2, "expert_losses", "expert_grad_norms", "expert_lrs".
    Cost: N evaluations per pass per round, and N extra copies of the parameters.
    """

    name = "ensemble"

    def __init__(self, params: Iterable[torch.Tensor], cfg: LearnerConfig) -> None:
        super().__init__(params, cfg)
        self.lrs = [cfg.lr * cfg.lr_ratio**i for i in range(cfg.experts)]
        self.experts = [snapshot(self.params) for _ in self.lrs]  # w_{1,i} = w_0
        self.cumulative_losses = [0.0] * cfg.experts  # L_i, so p_1 is uniform

    def weights(self) -> list[float]:
        """The Hedge weights currently in force, softmax(-gamma L)."""
        return hedge_weights(self.cumulative_losses, self.cfg.gamma)

    def update(self, grad_fn: GradFn) -> dict:
        cfg = self.cfg
        weights_in_force = self.weights()
        losses, norms = [], []
        for expert, lr in zip(self.experts, self.lrs, strict=True):
            first: tuple[float, float] | None = None
            for _ in range(cfg.passes):
                loss, grads, norm = evaluate(grad_fn, expert, cfg.clip)
                first = first or (loss, norm)
                assign(expert, projected_step(expert, grads, lr, self.w0, cfg.radius))
            losses.append(first[0])
            norms.append(first[1])
        self.cumulative_losses = [c + x for c, x in zip(self.cumulative_losses, losses, strict=True)]
        weights = self.weights()
        self._publish(weights)
        self.round += 1
        return {
            "round": self.round,
            "loss": sum(p * x for p, x in zip(weights_in_force, losses, strict=True)),
            "grad_norm": sum(p * n for p, n in zip(weights_in_force, norms, strict=True)),
            "weights": weights,
            "cumulative_losses": list(self.cumulative_losses),
            "effective_experts": 1.0 / sum(p * p for p in weights),
            "expert_losses": losses,
            "expert_grad_norms": norms,
            "expert_lrs": list(self.lrs),
        }

    @torch.no_grad()
    def _publish(self, weights: list[float]) -> None:
        """params <- sum_i p_i w_i, in place."""
        for j, param in enumerate(self.params):
            param.zero_()
            for p, expert in zip(weights, self.experts, strict=True):
                param.add_(expert[j], alpha=p)

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "experts": [snapshot(e) for e in self.experts],
            "cumulative_losses": list(self.cumulative_losses),
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["experts"]) != len(self.experts):
            raise UserError(
                f"learner state holds {len(state['experts'])} ensemble experts but this learner has "
                f"{len(self.experts)}: set experts={len(state['experts'])} to resume it"
            )
        super().load_state_dict(state)
        for i, (expert, saved) in enumerate(zip(self.experts, state["experts"], strict=True)):
            restore(expert, saved, f"experts[{i}]")
        self.cumulative_losses = [float(x) for x in state["cumulative_losses"]]
