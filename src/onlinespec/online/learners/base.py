"""The learner contract (docs/method.md §2): one `update` per round, fed by a gradient oracle, writing w_{t+1} in place.

A round is prequential: the decoder drafts the whole round with the published parameters w_t (the live `params`),
the feedback is collected, then `update(grad_fn)` runs once and leaves w_{t+1} in `params`. Publication between
rounds (atomic swap, never mid-proposal) is the caller's job; a learner never touches decoding state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from onlinespec.errors import UserError
from onlinespec.online.learners.preconditioner import PRECONDITIONERS, Preconditioner, make_preconditioner
from onlinespec.online.learners.projection import clip_by_global_norm

GradFn = Callable[[list[torch.Tensor]], tuple[float, list[torch.Tensor]]]
"""grad_fn(values) -> (loss, grads): the round's per-token-normalised loss and its gradient at parameter values
`values` (same shapes/dtypes as the learner's params). It must not modify `values`. Learners call it with grad
mode as the caller left it (never inside torch.no_grad), so it may use autograd; they detach what it returns."""


LR_GRIDS = ("up", "centred")

# The one table of learning-rate defaults (LearnerConfig.lr = None), per per-coordinate step for ogd, optimistic
# and the ensemble (its smallest expert, or its centre with lr_grid=centred), per learner for the ablations.
# docs/online-learning.md "Defaults" says where each value comes from:
#   sgd 0.1     textbook OGD on the norm-1-clipped gradient; 1.0 was unstable on the embedded model (caecf14 runs)
#   adam 5e-4   the order of the paper's online AdamW (1e-3); the adapt runs in docs/benchmarks.md use it (on a
#               60-round stream the re-made head drifted at 5e-4 and learned at 1e-4: the adapt-long preset's)
#   adagrad 1e-3  AdaGrad's first step is ~lr per coordinate, as Adam's; set by that analogy, not by a run
#   adamw 5e-4, sgd-momentum 0.1: as adam and sgd
DEFAULT_LR = {"sgd": 0.1, "adagrad": 1e-3, "adam": 5e-4, "adamw": 5e-4, "sgd-momentum": 0.1}


def default_lr(learner: str, step: str) -> float:
    """The learning rate `learner` uses with per-coordinate `step` when none is given."""
    return DEFAULT_LR.get(learner, DEFAULT_LR[step])


# The step-size ramp (LearnerConfig.lr_warmup = None), per per-coordinate step: the first updates of adam and adagrad
# move EVERY coordinate by about eta whatever its gradient (Adam's first u is sign(g)). On the re-made bundled head
# (adapt preset, bf16, one Adam step a round) that first update raised round 1's own loss from 1.30 to 4.80 on
# summaries, and each later round's loss (before its update) averaged 1.12x the frozen head's; with a ramp of 10
# updates 0.86x, and on math 0.58x against 0.81x without (docs/benchmarks.md). sgd steps scale with the gradient.
DEFAULT_LR_WARMUP = {"sgd": 0, "adagrad": 10, "adam": 10}


HEDGE_RATES = ("fixed", "anytime")


@dataclass
class LearnerConfig:
    """Hyper-parameters of every learner; each learner reads the fields it needs."""

    lr: float | None = None  # eta (ensemble: see lr_grid); None = the learner's default, DEFAULT_LR
    clip: float = 1.0  # global L2-norm clip of each gradient (0 = off)
    radius: float = 0.0  # Pi: L2 ball (all params jointly) of this radius around the warm start w_0; 0 = identity
    passes: int = 1  # gradient steps per round over the same round's feedback
    experts: int = 3  # ensemble size
    lr_ratio: float = 2.0  # ensemble grid: expert i uses lr * lr_ratio**i
    gamma: float = 1.0  # Hedge rate on per-token cumulative losses
    momentum: float = 0.9  # sgd-momentum ablation
    betas: tuple[float, float] = (0.9, 0.999)  # adamw ablation
    weight_decay: float = 0.0  # adamw ablation
    # adaptive steps (docs/method.md §2, "Adaptive versions"; preconditioner.py) for ogd, optimistic and ensemble
    step: str = "sgd"  # per-coordinate step D^-1: sgd (identity, textbook OGD) | adagrad | adam
    eps: float = 1e-8  # adagrad/adam: D = sqrt(.) + eps
    adam_betas: tuple[float, float] = (0.9, 0.95)  # step=adam (the paper's EAGLE-3 online code); `betas` is adamw's
    hint_ema: float = 0.0  # optimistic hint h <- hint_ema h + (1 - hint_ema) g; 0 = the last gradient
    lr_grid: str = "up"  # ensemble grid: up = lr * lr_ratio**i; centred = lr * lr_ratio**(i - (experts - 1) / 2)
    hedge_rate: str = "fixed"  # fixed = gamma; anytime = gamma * sqrt(8 ln N / t) / B_t (B_t: max expert-loss spread)
    share: float = 0.0  # ensemble fixed-share mixing p <- (1 - share) p + share / N each round; 0 = off
    # eta_t = eta * min(1, t / lr_warmup) for update t = 1, 2, ... (0 = off; None = the step's DEFAULT_LR_WARMUP)
    lr_warmup: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.lr is None or self.lr > 0, f"lr must be > 0 (got {self.lr})"),
            (self.clip >= 0, f"clip must be >= 0, 0 turns clipping off (got {self.clip})"),
            (self.radius >= 0, f"radius must be >= 0, 0 turns the projection off (got {self.radius})"),
            (self.passes >= 1, f"passes must be a whole number >= 1 (got {self.passes})"),
            (self.experts >= 1, f"experts must be a whole number >= 1 (got {self.experts})"),
            (self.lr_ratio > 0, f"lr_ratio must be > 0 (got {self.lr_ratio})"),
            (self.gamma >= 0, f"gamma must be >= 0 (got {self.gamma})"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1) (got {self.momentum})"),
            (all(0 <= b < 1 for b in self.betas), f"betas must both be in [0, 1) (got {self.betas})"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0 (got {self.weight_decay})"),
            (self.step in PRECONDITIONERS, f"step must be one of {', '.join(PRECONDITIONERS)} (got {self.step!r})"),
            (self.eps > 0, f"eps must be > 0 (got {self.eps})"),
            (all(0 <= b < 1 for b in self.adam_betas), f"adam_betas must both be in [0, 1) (got {self.adam_betas})"),
            (0 <= self.hint_ema < 1, f"hint_ema must be in [0, 1), 0 = last gradient (got {self.hint_ema})"),
            (self.lr_grid in LR_GRIDS, f"lr_grid must be one of {', '.join(LR_GRIDS)} (got {self.lr_grid!r})"),
            (
                self.hedge_rate in HEDGE_RATES,
                f"hedge_rate must be one of {', '.join(HEDGE_RATES)} (got {self.hedge_rate!r})",
            ),
            (0 <= self.share <= 1, f"share must be in [0, 1], 0 turns fixed-share off (got {self.share})"),
            (
                self.lr_warmup is None or self.lr_warmup >= 0,
                f"lr_warmup must be a whole number >= 0, 0 = off (got {self.lr_warmup})",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"bad learner setting: {message}")


class Learner(Protocol):
    """An online learner of the draft's parameters."""

    name: str
    params: list[torch.Tensor]  # the LIVE published draft parameters; update() writes w_{t+1} into them in place

    def update(self, grad_fn: GradFn) -> dict:
        """Play one round. Returns telemetry: at least "loss" (at the round's decision w_t, the first evaluation)
        and "grad_norm" (before clipping), plus learner-specific fields."""

    def state_dict(self) -> dict:
        """Tensors (cloned) and plain python values: everything needed to continue exactly."""

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`, writing the saved parameters into the live `params` in place."""


def evaluate(grad_fn: GradFn, values: list[torch.Tensor], clip: float) -> tuple[float, list[torch.Tensor], float]:
    """Call the oracle at `values` -> (loss, clipped detached grads, grad norm before clipping).

    Raises FloatingPointError on a non-finite loss or gradient, before anything is updated: a learner never steps on
    (nor silently skips) a broken round.
    """
    loss, grads = grad_fn(values)
    loss = float(loss)
    grads = [g.detach() for g in grads]
    if len(grads) != len(values) or any(g.shape != v.shape for g, v in zip(grads, values, strict=True)):
        raise ValueError("grad_fn returned gradients whose number or shapes differ from the parameters")
    clipped, norm = clip_by_global_norm(grads, clip)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        raise FloatingPointError(
            f"non-finite loss ({loss}) or gradient norm ({norm}); parameters left unchanged. "
            "Lower the learning rate, turn clipping on, or check the feedback."
        )
    return loss, clipped, norm


class BaseLearner:
    """Common state: the live params, the config, the warm start w_0 (centre of Pi) and the round counter."""

    name = "base"

    def __init__(self, params: Iterable[torch.Tensor], cfg: LearnerConfig) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"learner '{self.name}' got no parameters to learn")
        if not all(p.is_floating_point() for p in self.params):
            raise ValueError(f"learner '{self.name}' needs floating-point parameters")
        self.cfg = cfg
        self.w0 = snapshot(self.params)  # warm start w_0: Pi's centre
        self.round = 0  # rounds played so far

    def update(self, grad_fn: GradFn) -> dict:
        raise NotImplementedError

    def eta(self, lr: float | None = None) -> float:
        """The step size of the update being played: `lr` (default cfg.lr) on the ramp, lr * warmup()."""
        return (self.cfg.lr if lr is None else lr) * self.warmup()

    def warmup(self) -> float:
        """The ramp's factor for the update being played (number round + 1): min(1, (round + 1) / lr_warmup), with
        lr_warmup None read from DEFAULT_LR_WARMUP for the step."""
        ramp = DEFAULT_LR_WARMUP[self.cfg.step] if self.cfg.lr_warmup is None else self.cfg.lr_warmup
        return min(1.0, (self.round + 1) / ramp) if ramp else 1.0

    def new_preconditioner(self) -> Preconditioner:
        """A fresh per-coordinate step of kind cfg.step over the params (preconditioner.py)."""
        return make_preconditioner(self.cfg.step, self.params, self.cfg.eps, self.cfg.adam_betas)

    def run_passes(self, grad_fn: GradFn, step: Callable[[list[torch.Tensor]], None]) -> tuple[float, float]:
        """cfg.passes steps on one round's feedback, each re-evaluating the clipped gradient at the current params
        and handing it to `step`. Returns (loss, grad norm) of the first evaluation, i.e. at the decision w_t."""
        first: tuple[float, float] | None = None
        for _ in range(self.cfg.passes):
            loss, grads, norm = evaluate(grad_fn, self.params, self.cfg.clip)
            first = first or (loss, norm)
            step(grads)
        return first

    def state_dict(self) -> dict:
        return {"learner": self.name, "round": self.round, "params": snapshot(self.params), "w0": snapshot(self.w0)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("learner") != self.name:
            raise UserError(
                f"learner state was saved by '{state.get('learner')}', not '{self.name}': "
                f"load it into a '{state.get('learner')}' learner"
            )
        restore(self.params, state["params"], "params")
        restore(self.w0, state["w0"], "w0")
        self.round = int(state["round"])


def snapshot(values: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies (a saved state must not change when the learner keeps going)."""
    return [v.detach().clone() for v in values]


@torch.no_grad()
def assign(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """dst[i] <- src[i] in place (same tensor objects, new values)."""
    for d, s in zip(dst, src, strict=True):
        d.copy_(s)


def restore(dst: list[torch.Tensor], saved: list[torch.Tensor], what: str) -> None:
    """`assign` after checking the saved list matches: a mismatch is a user error (wrong checkpoint or model)."""
    if len(saved) != len(dst) or any(s.shape != d.shape for s, d in zip(saved, dst, strict=True)):
        raise UserError(
            f"learner state '{what}' does not match this draft ({len(saved)} tensors saved, {len(dst)} here, or "
            "different shapes): load a state saved for the same draft model"
        )
    assign(dst, saved)
