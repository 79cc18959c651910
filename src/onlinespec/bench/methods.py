"""Bench method names: `ar`, or a learner carrying its own settings, so one run can interleave variants.

    METHOD = LEARNER[-STEP][@FIELD=VALUE]...

LEARNER is a learner name (online/learners, e.g. static, ogd, optimistic, ensemble, adamw, or `count` for a draft
that learns without gradients: `--draft lookup`); STEP a per-coordinate
step (sgd, adagrad, adam: LearnerConfig.step); each FIELD=VALUE sets a LearnerConfig field or one of the per-method
OnlineConfig fields in METHOD_ONLINE_FIELDS, over the run's learning flags. Values are parsed as the field's type:
numbers, strings, true/false, and pairs as A/B (adam_betas=0.9/0.95). Examples: `ogd` (the flags' settings),
`ogd-adam` (ogd with step adam), `ogd-adam@lr=5e-4@epochs=2`, `ensemble-adam@lr_grid=centred@share=0.05`.
"""

from __future__ import annotations

from dataclasses import fields, replace

from onlinespec.errors import UserError
from onlinespec.online.counting_draft import COUNT
from onlinespec.online.learners import LEARNERS, PRECONDITIONERS, LearnerConfig
from onlinespec.online.session import OnlineConfig

# OnlineConfig fields a method may set for itself (the bench sets learner, rounds, schedule, state and telemetry).
METHOD_ONLINE_FIELDS = (
    "loss",
    "positions",
    "top_k",
    "max_positions",
    "batch_requests",
    "epochs",
    "replay_positions",
    "unroll",
    "mask_oov",
    "loss_after",
    "prompt_positions",
    "index_every",
)


def split_method(method: str) -> tuple[str, str | None, list[tuple[str, str]]]:
    """`ogd-adam@lr=5e-4` -> ("ogd", "adam", [("lr", "5e-4")]); a UserError for an unknown name or setting."""
    name, *settings = method.split("@")
    learner, step = name, None
    if name not in LEARNERS and name != COUNT:  # count: the lookup draft's learner (`--draft lookup`)
        base, _, suffix = name.rpartition("-")
        if base not in LEARNERS or suffix not in PRECONDITIONERS:
            raise UserError(
                f"unknown method '{method}': use ar or LEARNER[-STEP][@FIELD=VALUE]... with a learner from "
                f"{', '.join(LEARNERS)} and a step from {', '.join(PRECONDITIONERS)}"
            )
        learner, step = base, suffix
    pairs = []
    for item in settings:
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise UserError(f"method '{method}': '{item}' is not FIELD=VALUE")
        pairs.append((key, value))
    return learner, step, pairs


def _parse(value: str, like: object, where: str) -> object:
    try:
        if isinstance(like, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if isinstance(like, tuple):
            return tuple(float(v) for v in value.split("/"))
        if like is None:  # an unset number: lr = None means the learner's default
            return float(value)
        return type(like)(value)
    except ValueError as exc:
        raise UserError(f"{where}: cannot read '{value}' as a {type(like).__name__}") from exc


def method_config(method: str, online: OnlineConfig) -> OnlineConfig:
    """The OnlineConfig a learning method runs with: `online` (the run's flags) with the method's learner, step and
    settings. Validation errors of the settings are UserErrors naming the method."""
    learner, step, pairs = split_method(method)
    learner_fields = {f.name for f in fields(LearnerConfig)}
    learner_cfg: dict[str, object] = {"step": step} if step else {}
    online_cfg: dict[str, object] = {}
    for key, value in pairs:
        where = f"method '{method}', {key}"
        if key in learner_fields:
            learner_cfg[key] = _parse(value, getattr(online.learner_cfg, key), where)
        elif key in METHOD_ONLINE_FIELDS:
            online_cfg[key] = _parse(value, getattr(online, key), where)
        else:
            raise UserError(
                f"method '{method}': unknown setting '{key}'; a LearnerConfig field or one of "
                f"{', '.join(METHOD_ONLINE_FIELDS)}"
            )
    try:
        return replace(online, learner=learner, learner_cfg=replace(online.learner_cfg, **learner_cfg), **online_cfg)
    except UserError as exc:
        raise UserError(f"method '{method}': {exc}") from exc
