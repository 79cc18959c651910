"""Static: never changes the draft (docs/method.md §2) — the baseline every learner is compared with."""

from __future__ import annotations

from onlinespec.online.learners.base import BaseLearner, GradFn
from onlinespec.online.learners.projection import global_norm


class StaticLearner(BaseLearner):
    """w_{t+1} = w_t.

    It still calls grad_fn ONCE per round so its telemetry carries the same "loss" (and "grad_norm") as the
    learners it is compared with; that costs one loss+gradient evaluation per round and is accepted for
    comparable numbers. Nothing is checked or clipped: a non-finite loss is reported, not raised.
    """

    name = "static"

    def update(self, grad_fn: GradFn) -> dict:
        loss, grads = grad_fn(self.params)
        self.round += 1
        return {
            "round": self.round,
            "loss": float(loss),
            "grad_norm": global_norm([g.detach() for g in grads]),
            "update_norm_ratio": 0.0,
        }
