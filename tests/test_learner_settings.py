"""Learner settings at the edges of their ranges, the documented defaults, and round counting (mutation testing
found these unchecked, docs/testing.md)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from onlinespec.errors import UserError
from onlinespec.online.learners import LEARNERS, LearnerConfig, make_learner

JUST_BELOW_ZERO = -1e-12

REFUSED = [
    ("lr", 0.0),
    ("clip", JUST_BELOW_ZERO),
    ("radius", JUST_BELOW_ZERO),
    ("passes", 0),
    ("experts", 0),
    ("lr_ratio", 0.0),
    ("gamma", JUST_BELOW_ZERO),
    ("momentum", JUST_BELOW_ZERO),
    ("momentum", 1.0),
    ("betas", (JUST_BELOW_ZERO, 0.5)),
    ("betas", (1.0, 0.5)),
    ("betas", (0.5, 1.0)),
    ("weight_decay", JUST_BELOW_ZERO),
    ("eps", 0.0),
    ("adam_betas", (JUST_BELOW_ZERO, 0.5)),
    ("adam_betas", (1.0, 0.5)),
    ("adam_betas", (0.5, 1.0)),
    ("hint_ema", JUST_BELOW_ZERO),
    ("hint_ema", 1.0),
    ("share", JUST_BELOW_ZERO),
    ("share", 1.0 + 1e-12),
    ("step", "sgd "),
    ("lr_grid", "centered"),
    ("hedge_rate", "anytime "),
    ("lr_warmup", -1),
]
ACCEPTED = [
    ("lr", 1e-12),
    ("clip", 0.0),
    ("radius", 0.0),
    ("passes", 1),
    ("experts", 1),
    ("lr_ratio", 1e-12),
    ("gamma", 0.0),
    ("momentum", 0.0),
    ("momentum", 1 - 1e-12),
    ("betas", (0.0, 1 - 1e-12)),
    ("weight_decay", 0.0),
    ("eps", 1e-30),
    ("adam_betas", (0.0, 1 - 1e-12)),
    ("hint_ema", 0.0),
    ("share", 0.0),
    ("share", 1.0),
    ("lr_warmup", 0),
    ("lr_warmup", 1),
]


@pytest.mark.parametrize(("field", "value"), REFUSED)
def test_each_setting_is_refused_just_outside_its_range(field: str, value) -> None:
    with pytest.raises(UserError, match=f"bad learner setting: {field} must"):
        LearnerConfig(**{field: value})


@pytest.mark.parametrize(("field", "value"), ACCEPTED)
def test_each_setting_is_accepted_at_its_bound(field: str, value) -> None:
    assert getattr(LearnerConfig(**{field: value}), field) == value


def test_defaults_are_the_documented_ones() -> None:
    """docs/online-learning.md's flag table gives these; lr None = the learner's default (its Defaults table)."""
    assert dataclasses.asdict(LearnerConfig()) == {
        "lr": None,
        "clip": 1.0,
        "radius": 0.0,
        "passes": 1,
        "experts": 3,
        "lr_ratio": 2.0,
        "gamma": 1.0,
        "momentum": 0.9,
        "betas": (0.9, 0.999),
        "weight_decay": 0.0,
        "step": "sgd",
        "eps": 1e-8,
        "adam_betas": (0.9, 0.95),
        "hint_ema": 0.0,
        "lr_grid": "up",
        "hedge_rate": "fixed",
        "share": 0.0,
        "lr_warmup": None,
    }


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_every_learner_counts_its_rounds(name: str) -> None:
    learner = make_learner(name, [torch.zeros(2)], LearnerConfig(lr=0.5))
    rounds = [learner.update(lambda v: (0.5 * float((v[0] - 1).pow(2).sum()), [v[0] - 1]))["round"] for _ in range(3)]
    assert rounds == [1, 2, 3] and learner.state_dict()["round"] == 3
