"""Online ensemble: Hedge over OGD experts on a geometric learning-rate grid (docs/method.md §2, Ader-style)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from onlinespec.errors import UserError
from onlinespec.online.learners.base import BaseLearner, GradFn, LearnerConfig, assign, evaluate, restore, snapshot
from onlinespec.online.learners.projection import projected_step, relative_change


def hedge_weights(cumulative_losses: list[float], gamma: float) -> list[float]:
    """p_i = softmax(-gamma * L)_i, computed stably in float64 (subtract the max logit)."""
    logits = [-gamma * loss for loss in cumulative_losses]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def fixed_share(weights: list[float], losses: list[float], gamma: float, share: float) -> list[float]:
    """One Hedge step from the weights in force, then fixed-share mixing (Herbster & Warmuth 1998):
    q_i = p_i exp(-gamma l_i) / Z (stably, in float64);  p_i <- (1 - share) q_i + share / N."""
    logits = [(math.log(p) if p > 0 else -math.inf) - gamma * loss for p, loss in zip(weights, losses, strict=True)]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    n = len(weights)
    return [(1 - share) * e / total + share / n for e in exps]


def expert_lrs(cfg: LearnerConfig) -> list[float]:
    """The grid: `up` eta_i = lr * lr_ratio**i (lr the smallest); `centred` eta_i = lr * lr_ratio**(i - (N-1)/2)
    (lr in the middle: N = 3, ratio 2 gives lr/2, lr, 2 lr)."""
    if cfg.lr_grid == "up":
        return [cfg.lr * cfg.lr_ratio**i for i in range(cfg.experts)]
    return [cfg.lr * cfg.lr_ratio ** (i - (cfg.experts - 1) / 2) for i in range(cfg.experts)]


class EnsembleLearner(BaseLearner):
    """N = cfg.experts independent OGD experts, expert i with eta_i on the grid `expert_lrs(cfg)` and its own
    preconditioner of kind cfg.step (preconditioner.py), all starting at w_0.

    Each round, every expert i is evaluated at ITS OWN iterate w_{t,i} (grad_fn(expert values)):
        loss_i, g_i = l_t(w_{t,i}), grad      w_{t+1,i} = Pi(w_{t,i} - eta_i D_i^{-1} clip(g_i))  (cfg.passes steps)
        L_i += loss_i                         (per-token losses, so gamma has a stable meaning)
        share = 0:  p_{t+1} = softmax(-gamma_t L)
        share > 0:  p_{t+1} = (1 - share) q + share / N,  q_i ∝ p_{t,i} exp(-gamma_t loss_i)   (fixed share)
        published   w_{t+1} = sum_i p_{t+1,i} w_{t+1,i}
    gamma_t: `fixed` = cfg.gamma; `anytime` = cfg.gamma * sqrt(8 ln N / t) / B_t, the anytime Hedge rate for losses
    in a range of width B_t after t rounds. Hedge only sees differences between experts within a round, so B_t is
    estimated as the largest spread max_i loss_i - min_i loss_i seen in any round so far (gamma_t = 0 while it is 0:
    all experts have had equal losses, the weights stay uniform).
    The average of points in the ball around w_0 stays in it, so the published draft needs no extra projection.

    Telemetry: the loss of the published decision w_t itself is NOT evaluated (one more evaluation per round);
    "loss" is the weighted expert loss sum_i p_{t,i} loss_i with the weights in force during the round, and
    "grad_norm" likewise sum_i p_{t,i} ||g_i|| (before clipping). Also: "weights" (p_{t+1}), "cumulative_losses",
    "effective_experts" = 1 / sum_i p_{t+1,i}^2, "expert_losses", "expert_grad_norms", "expert_lrs", "hedge_gamma"
    (gamma_t), "loss_range" (B_t) and "update_norm_ratio" (of the published draft).
    Cost: N evaluations per pass per round, and N extra copies of the parameters (plus each expert's step state).
    """

    name = "ensemble"

    def __init__(self, params: Iterable[torch.Tensor], cfg: LearnerConfig) -> None:
        super().__init__(params, cfg)
        self.lrs = expert_lrs(cfg)
        self.experts = [snapshot(self.params) for _ in self.lrs]  # w_{1,i} = w_0
        self.preconds = [self.new_preconditioner() for _ in self.lrs]
        self.cumulative_losses = [0.0] * cfg.experts  # L_i
        self.loss_range = 0.0  # B_t
        self.p = hedge_weights(self.cumulative_losses, cfg.gamma)  # p_1 uniform

    def weights(self) -> list[float]:
        """The Hedge weights currently in force (those of the published draft)."""
        return list(self.p)

    def rate(self) -> float:
        """gamma_t for the weights made after round t = self.round + 1 (see the class docstring)."""
        cfg = self.cfg
        if cfg.hedge_rate == "fixed":
            return cfg.gamma
        if self.loss_range == 0:
            return 0.0
        return cfg.gamma * math.sqrt(8 * math.log(cfg.experts) / (self.round + 1)) / self.loss_range

    def update(self, grad_fn: GradFn) -> dict:
        cfg = self.cfg
        before = snapshot(self.params)
        weights_in_force = self.p
        losses, norms = [], []
        for expert, precond, lr in zip(self.experts, self.preconds, self.lrs, strict=True):
            first: tuple[float, float] | None = None
            for _ in range(cfg.passes):
                loss, grads, norm = evaluate(grad_fn, expert, cfg.clip)
                first = first or (loss, norm)
                assign(expert, projected_step(expert, precond.observe(grads), self.eta(lr), self.w0, cfg.radius))
            losses.append(first[0])
            norms.append(first[1])
        self.cumulative_losses = [c + x for c, x in zip(self.cumulative_losses, losses, strict=True)]
        self.loss_range = max(self.loss_range, max(losses) - min(losses))
        gamma = self.rate()
        if cfg.share == 0:
            self.p = hedge_weights(self.cumulative_losses, gamma)
        else:
            self.p = fixed_share(weights_in_force, losses, gamma, cfg.share)
        weights = self.p
        self._publish(weights)
        self.round += 1
        return {
            "round": self.round,
            "loss": sum(p * x for p, x in zip(weights_in_force, losses, strict=True)),
            "grad_norm": sum(p * n for p, n in zip(weights_in_force, norms, strict=True)),
            "weights": list(weights),
            "cumulative_losses": list(self.cumulative_losses),
            "effective_experts": 1.0 / sum(p * p for p in weights),
            "expert_losses": losses,
            "expert_grad_norms": norms,
            "expert_lrs": list(self.lrs),
            "hedge_gamma": gamma,
            "loss_range": self.loss_range,
            "update_norm_ratio": relative_change(before, self.params),
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
            "weights": list(self.p),
            "loss_range": self.loss_range,
            "preconditioners": [pc.state_dict() for pc in self.preconds],
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
        # states saved before fixed share / adaptive steps: weights = softmax(-gamma L), range 0, sgd experts
        self.p = [float(x) for x in state.get("weights", hedge_weights(self.cumulative_losses, self.cfg.gamma))]
        self.loss_range = float(state.get("loss_range", 0.0))
        for pc, saved in zip(
            self.preconds, state.get("preconditioners", [{"step": "sgd"}] * len(self.preconds)), strict=True
        ):
            pc.load_state_dict(saved)
