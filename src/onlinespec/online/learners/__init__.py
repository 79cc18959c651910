"""Online learners of the draft's parameters (docs/method.md §2), and `make_learner` which builds one by name.

Paper's learners: `static` (baseline, no update), `ogd`, `optimistic` (optimistic OGD), `ensemble` (Hedge over
OGD experts). `LearnerConfig.step` gives ogd, optimistic and the ensemble's experts a per-coordinate step
(`sgd` = the textbook rule, `adagrad`, `adam`; preconditioner.py). Ablations, NOT the paper's rules:
`sgd-momentum`, `adamw`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import torch

from onlinespec.errors import UserError
from onlinespec.online.learners.ablations import AdamWLearner, SGDMomentumLearner
from onlinespec.online.learners.base import DEFAULT_LR, BaseLearner, GradFn, Learner, LearnerConfig, default_lr
from onlinespec.online.learners.ensemble import EnsembleLearner, expert_lrs, fixed_share, hedge_weights
from onlinespec.online.learners.ogd import OGDLearner
from onlinespec.online.learners.optimistic import OptimisticLearner
from onlinespec.online.learners.preconditioner import PRECONDITIONERS, Preconditioner, make_preconditioner
from onlinespec.online.learners.projection import (
    clip_by_global_norm,
    global_norm,
    project,
    projected_step,
    relative_change,
)
from onlinespec.online.learners.static import StaticLearner

LEARNERS: dict[str, type[BaseLearner]] = {
    cls.name: cls
    for cls in (StaticLearner, OGDLearner, OptimisticLearner, EnsembleLearner, SGDMomentumLearner, AdamWLearner)
}


def make_learner(name: str, params: Iterable[torch.Tensor], cfg: LearnerConfig | None = None) -> Learner:
    """Build the learner `name` over the live draft parameters `params` (their current values are w_0); an unset
    lr takes the learner's default (base.DEFAULT_LR)."""
    if name not in LEARNERS:
        raise UserError(f"unknown learner '{name}': choose one of {', '.join(LEARNERS)}")
    cfg = cfg if cfg is not None else LearnerConfig()
    if cfg.lr is None:
        cfg = replace(cfg, lr=default_lr(name, cfg.step))
    return LEARNERS[name](params, cfg)


__all__ = [
    "DEFAULT_LR",
    "default_lr",
    "LEARNERS",
    "PRECONDITIONERS",
    "AdamWLearner",
    "BaseLearner",
    "EnsembleLearner",
    "GradFn",
    "Learner",
    "LearnerConfig",
    "OGDLearner",
    "OptimisticLearner",
    "Preconditioner",
    "SGDMomentumLearner",
    "StaticLearner",
    "clip_by_global_norm",
    "expert_lrs",
    "fixed_share",
    "global_norm",
    "hedge_weights",
    "make_learner",
    "make_preconditioner",
    "project",
    "projected_step",
    "relative_change",
]
