"""Online gradient descent (docs/method.md §2)."""

from __future__ import annotations

from onlinespec.online.learners.base import BaseLearner, GradFn, assign
from onlinespec.online.learners.projection import projected_step


class OGDLearner(BaseLearner):
    """Projected OGD: w_{t+1} = Pi(w_t - eta * clip(g_t)), g_t = grad l_t(w_t).

    With cfg.passes = P > 1 the step is repeated P times on the same round's feedback, each pass re-evaluating
    the gradient at the current iterate. Telemetry "loss"/"grad_norm" come from the first evaluation (at w_t).
    """

    name = "ogd"

    def update(self, grad_fn: GradFn) -> dict:
        cfg = self.cfg
        loss, norm = self.run_passes(
            grad_fn, lambda grads: assign(self.params, projected_step(self.params, grads, cfg.lr, self.w0, cfg.radius))
        )
        self.round += 1
        return {"round": self.round, "loss": loss, "grad_norm": norm}
