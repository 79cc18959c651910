"""Exact tests of the online learners (docs/method.md §2) on tiny quadratics with closed-form gradients.

Round t's loss is l_t(w) = 0.5 * ||w - c_t||^2 over all parameter tensors jointly, so grad l_t(w) = w - c_t.
Learning rates and targets are binary fractions, so most expected values are exact in float32.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from onlinespec.errors import UserError
from onlinespec.online.learners import (
    LEARNERS,
    LearnerConfig,
    clip_by_global_norm,
    hedge_weights,
    make_learner,
    project,
)


def quadratic(targets: list[torch.Tensor]):
    """grad_fn of l(w) = 0.5 * ||w - c||^2 with c = targets (a list shaped like the params); records its calls."""

    def grad_fn(values: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        grad_fn.calls.append([v.clone() for v in values])
        grads = [v - c for v, c in zip(values, targets, strict=True)]
        return 0.5 * sum(float((g * g).sum()) for g in grads), grads

    grad_fn.calls = []
    return grad_fn


def autograd_quadratic(targets: list[torch.Tensor]):
    """The same loss, differentiated by autograd (fails if a learner calls it under torch.no_grad)."""

    def grad_fn(values: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        leaves = [v.detach().requires_grad_(True) for v in values]
        loss = 0.5 * sum(((w - c) ** 2).sum() for w, c in zip(leaves, targets, strict=True))
        return loss.item(), list(torch.autograd.grad(loss, leaves))

    return grad_fn


def scalar(x: float) -> list[torch.Tensor]:
    return [torch.tensor([x])]


def two_tensors(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, generator=g), torch.randn(2, 2, generator=g)]


# ---- helpers: clipping and projection ------------------------------------------------------------------------


def test_clipping_scales_gradient_to_clip_norm():
    clipped, norm = clip_by_global_norm([torch.tensor([3.0]), torch.tensor([[4.0]])], 1.0)
    assert norm == 5.0
    assert torch.equal(clipped[0], torch.tensor([0.6])) and torch.equal(clipped[1], torch.tensor([[0.8]]))
    unclipped, _ = clip_by_global_norm([torch.tensor([0.3, 0.4])], 1.0)
    assert torch.equal(unclipped[0], torch.tensor([0.3, 0.4]))
    off, norm_off = clip_by_global_norm([torch.tensor([3.0, 4.0])], 0.0)
    assert norm_off == 5.0 and torch.equal(off[0], torch.tensor([3.0, 4.0]))


def test_projection_onto_ball_boundary_outside_identity_inside():
    center = [torch.tensor([1.0]), torch.tensor([1.0])]
    outside = project([torch.tensor([4.0]), torch.tensor([5.0])], center, radius=1.0)  # offset (3, 4), norm 5
    assert torch.allclose(torch.cat(outside), torch.tensor([1.6, 1.8]))
    inside = [torch.tensor([1.3]), torch.tensor([1.4])]
    assert all(torch.equal(a, b) for a, b in zip(project(inside, center, 1.0), inside, strict=True))
    assert torch.equal(project([torch.tensor([9.0])], [torch.tensor([0.0])], 0.0)[0], torch.tensor([9.0]))


# ---- OGD -------------------------------------------------------------------------------------------------------


def test_ogd_one_step_is_w_minus_eta_g():
    params = [torch.tensor([1.0, 2.0]), torch.tensor([[0.5]])]
    learner = make_learner("ogd", params, LearnerConfig(lr=0.25, clip=0.0))
    info = learner.update(quadratic([torch.tensor([0.0, 0.0]), torch.tensor([[1.5]])]))  # g = (1, 2, -1)
    assert torch.equal(params[0], torch.tensor([0.75, 1.5])) and torch.equal(params[1], torch.tensor([[0.75]]))
    assert info["loss"] == 3.0 and info["grad_norm"] == pytest.approx(math.sqrt(6))


def test_ogd_clips_gradient_before_the_step():
    params = [torch.tensor([0.0, 0.0])]
    learner = make_learner("ogd", params, LearnerConfig(lr=0.5, clip=1.0))
    info = learner.update(quadratic([torch.tensor([-3.0, -4.0])]))  # g = (3, 4) -> clipped (0.6, 0.8)
    assert info["grad_norm"] == 5.0
    assert torch.allclose(params[0], torch.tensor([-0.3, -0.4]))


def test_ogd_projects_onto_ball_around_warm_start():
    params = [torch.tensor([1.0, 1.0])]
    learner = make_learner("ogd", params, LearnerConfig(lr=1.0, clip=0.0, radius=2.0))
    learner.update(quadratic([torch.tensor([7.0, 9.0])]))  # unprojected step lands at (7, 9): offset (6, 8)
    assert torch.allclose(params[0], torch.tensor([1.0 + 1.2, 1.0 + 1.6]))
    assert torch.linalg.vector_norm(params[0] - 1.0).item() == pytest.approx(2.0)
    learner.update(quadratic([torch.tensor([2.0, 2.0])]))  # step lands inside the ball: no projection
    assert torch.allclose(params[0], torch.tensor([2.0, 2.0]))


def test_ogd_passes_reevaluate_at_current_iterate():
    params = scalar(0.0)
    learner = make_learner("ogd", params, LearnerConfig(lr=0.5, clip=0.0, passes=2))
    fn = quadratic(scalar(4.0))
    info = learner.update(fn)  # pass 1: g = -4 -> w = 2; pass 2: g = -2 -> w = 3
    assert [c[0].item() for c in fn.calls] == [0.0, 2.0]
    assert params[0].item() == 3.0 and info["loss"] == 8.0


# ---- optimistic OGD: hand computations ----------------------------------------------------------------------------


def run_rounds(learner, targets: list[float]) -> list[dict]:
    return [learner.update(quadratic(scalar(c))) for c in targets]


def test_optimistic_three_rounds_by_hand():
    # eta = 0.5, no clip, no projection, w_0 = 0, targets c = 2, 4, 1; g_t = w_t - c_t.
    # t=1: v1 = 0, h1 = 0, w1 = v1 - eta h1 = 0.  g1 = 0 - 2 = -2.  ||g1 - h1|| = 2.
    #      v2 = v1 - eta g1 = 1,  h2 = -2,  w2 = v2 - eta h2 = 2.
    # t=2: g2 = 2 - 4 = -2.  ||g2 - h2|| = 0.  v3 = 1 + 1 = 2,  h3 = -2,  w3 = 2 + 1 = 3.
    # t=3: g3 = 3 - 1 = 2.   ||g3 - h3|| = 4.  v4 = 2 - 1 = 1,  h4 = 2,   w4 = 1 - 1 = 0.
    params = scalar(0.0)
    learner = make_learner("optimistic", params, LearnerConfig(lr=0.5, clip=0.0))
    expected = [  # (w_{t+1}, v_{t+1}, h_{t+1}, hint error, loss at w_t)
        (2.0, 1.0, -2.0, 2.0, 2.0),
        (3.0, 2.0, -2.0, 0.0, 2.0),
        (0.0, 1.0, 2.0, 4.0, 2.0),
    ]
    for c, (w, v, h, err, loss) in zip([2.0, 4.0, 1.0], expected, strict=True):
        info = learner.update(quadratic(scalar(c)))
        assert (params[0].item(), learner.anchor[0].item(), learner.hint[0].item()) == (w, v, h)
        assert (info["hint_error"], info["loss"]) == (err, loss)


def test_optimistic_three_rounds_by_hand_with_projection():
    # Same game with Pi = ball of radius 1.5 around w_0 = 0 (on a scalar: clamp to [-1.5, 1.5]).
    # t=1: w1 = 0, g1 = -2, err 2.    v2 = Pi(0 + 1) = 1,        h2 = -2,   w2 = Pi(1 + 1) = 1.5.
    # t=2: g2 = 1.5 - 4 = -2.5, err 0.5.  v3 = Pi(1 + 1.25) = 1.5,  h3 = -2.5, w3 = Pi(1.5 + 1.25) = 1.5.
    # t=3: g3 = 1.5 - 1 = 0.5, err 3.     v4 = Pi(1.5 - 0.25) = 1.25, h4 = 0.5, w4 = Pi(1.25 - 0.25) = 1.0.
    params = scalar(0.0)
    learner = make_learner("optimistic", params, LearnerConfig(lr=0.5, clip=0.0, radius=1.5))
    expected = [(1.5, 1.0, -2.0, 2.0), (1.5, 1.5, -2.5, 0.5), (1.0, 1.25, 0.5, 3.0)]
    for c, (w, v, h, err) in zip([2.0, 4.0, 1.0], expected, strict=True):
        info = learner.update(quadratic(scalar(c)))
        assert (params[0].item(), learner.anchor[0].item(), learner.hint[0].item()) == (w, v, h)
        assert info["hint_error"] == err


def test_optimistic_passes_reevaluate_at_decision_from_anchor():
    # eta = 0.5, c = 4, two passes in round 1. Pass 1 at w1 = 0: g = -4, v = 2.
    # Pass 2 at Pi(v - eta g_last) = 2 + 2 = 4: g = 0, v = 2. Hint = last g = 0, published w2 = 2 - 0 = 2.
    params = scalar(0.0)
    learner = make_learner("optimistic", params, LearnerConfig(lr=0.5, clip=0.0, passes=2))
    fn = quadratic(scalar(4.0))
    learner.update(fn)
    assert [c[0].item() for c in fn.calls] == [0.0, 4.0]
    assert (params[0].item(), learner.anchor[0].item(), learner.hint[0].item()) == (2.0, 2.0, 0.0)


# ---- Hedge ensemble ---------------------------------------------------------------------------------------------


def test_ensemble_hedge_weights_and_published_average():
    # Experts eta = 0.125, 0.25, 0.5 on a scalar from w_0 = 0, gamma = 0.5, targets c = 2 then 1.
    cfg = LearnerConfig(lr=0.125, lr_ratio=2.0, experts=3, gamma=0.5, clip=0.0)
    params = scalar(0.0)
    learner = make_learner("ensemble", params, cfg)
    fn = quadratic(scalar(2.0))
    info1 = learner.update(fn)
    # Round 1: every expert is at 0: loss 2, g = -2 -> experts at 0.25, 0.5, 1.0; L = (2, 2, 2) -> uniform weights.
    assert [c[0].item() for c in fn.calls] == [0.0, 0.0, 0.0]
    assert info1["expert_losses"] == [2.0, 2.0, 2.0] and info1["loss"] == pytest.approx(2.0)
    assert info1["weights"] == pytest.approx([1 / 3] * 3)
    assert params[0].item() == pytest.approx((0.25 + 0.5 + 1.0) / 3)

    fn = quadratic(scalar(1.0))
    info2 = learner.update(fn)
    # Round 2 evaluates each expert at its own iterate: losses 0.5*(w-1)^2 = 0.28125, 0.125, 0.
    # Experts step to w - eta (w - 1): 0.34375, 0.625, 1.0. L = (2.28125, 2.125, 2.0).
    assert [c[0].item() for c in fn.calls] == [0.25, 0.5, 1.0]
    assert info2["expert_losses"] == [0.28125, 0.125, 0.0]
    assert info2["loss"] == pytest.approx((0.28125 + 0.125 + 0.0) / 3)  # weights in force during round 2: uniform
    cumulative = [2.28125, 2.125, 2.0]
    assert info2["cumulative_losses"] == cumulative
    logits = [-0.5 * x for x in cumulative]
    expected_p = [math.exp(x) / sum(math.exp(y) for y in logits) for x in logits]
    assert info2["weights"] == pytest.approx(expected_p, rel=1e-12)
    assert info2["effective_experts"] == pytest.approx(1 / sum(p * p for p in expected_p))
    experts = [0.34375, 0.625, 1.0]
    assert [e[0].item() for e in learner.experts] == experts
    assert params[0].item() == pytest.approx(sum(p * w for p, w in zip(expected_p, experts, strict=True)), rel=1e-6)


def test_hedge_weights_is_stable_softmax():
    assert hedge_weights([1000.0, 1001.0], 1.0) == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])


# ---- static, ablations ------------------------------------------------------------------------------------------


def test_static_never_changes_params_but_reports_loss():
    params = [torch.tensor([1.0, 2.0])]
    learner = make_learner("static", params, LearnerConfig(lr=1.0))
    fn = quadratic([torch.tensor([0.0, 0.0])])
    for _ in range(3):
        info = learner.update(fn)
        assert info["loss"] == 2.5 and info["grad_norm"] == pytest.approx(math.sqrt(5))
    assert torch.equal(params[0], torch.tensor([1.0, 2.0])) and len(fn.calls) == 3


@pytest.mark.parametrize(
    ("name", "make_reference"),
    [
        ("sgd-momentum", lambda ps, cfg: torch.optim.SGD(ps, lr=cfg.lr, momentum=cfg.momentum)),
        (
            "adamw",
            lambda ps, cfg: torch.optim.AdamW(ps, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay),
        ),
    ],
)
def test_ablations_match_torch_optimizers(name, make_reference):
    cfg = LearnerConfig(lr=0.1, clip=0.0, passes=2, weight_decay=0.01, momentum=0.8)
    params = two_tensors(0)
    reference = [p.clone().requires_grad_(True) for p in params]
    optimizer = make_reference(reference, cfg)
    learner = make_learner(name, params, cfg)
    for t in range(3):
        targets = two_tensors(10 + t)
        learner.update(quadratic(targets))
        for _ in range(cfg.passes):
            for r, c in zip(reference, targets, strict=True):
                r.grad = (r - c).detach()
            optimizer.step()
    for p, r in zip(params, reference, strict=True):
        torch.testing.assert_close(p, r.detach(), rtol=1e-6, atol=1e-7)


# ---- all learners: state, in-place publication, autograd oracle, names ----------------------------------------------


def stateful_config() -> LearnerConfig:
    return LearnerConfig(lr=0.3, clip=1.5, radius=1.0, passes=2, experts=3, gamma=2.0, weight_decay=0.1)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_state_dict_resume_continues_exactly(name):
    cfg = stateful_config()
    warm_start = two_tensors(0)
    rounds = [quadratic(two_tensors(100 + t)) for t in range(5)]
    uninterrupted = make_learner(name, [p.clone() for p in warm_start], cfg)
    for fn in rounds[:2]:
        uninterrupted.update(fn)
    buffer = io.BytesIO()
    torch.save(uninterrupted.state_dict(), buffer)  # a real checkpoint, loaded back with weights_only=True
    expected = [uninterrupted.update(fn) for fn in rounds[2:]]  # keeps going AFTER the save: the save must not move

    resumed = make_learner(name, [p.clone() for p in warm_start], cfg)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    got = [resumed.update(fn) for fn in rounds[2:]]
    assert got == expected
    for a, b in zip(resumed.params, uninterrupted.params, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_updates_write_into_the_live_param_tensors(name):
    params = two_tensors(0)
    before = [p.clone() for p in params]
    ids = [id(p) for p in params]
    learner = make_learner(name, params, LearnerConfig(lr=0.1))
    learner.update(quadratic(two_tensors(1)))
    assert [id(p) for p in learner.params] == ids
    assert all(a is b for a, b in zip(learner.params, params, strict=True))
    changed = [not torch.equal(p, b) for p, b in zip(params, before, strict=True)]
    assert all(changed) if name != "static" else not any(changed)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_autograd_oracle_agrees_with_closed_form(name):
    cfg = stateful_config()
    closed, auto = two_tensors(0), two_tensors(0)
    a = make_learner(name, closed, cfg)
    b = make_learner(name, auto, cfg)
    for t in range(2):
        targets = two_tensors(50 + t)
        info_a, info_b = a.update(quadratic(targets)), b.update(autograd_quadratic(targets))
        assert info_a["loss"] == pytest.approx(info_b["loss"], rel=1e-6)
    for x, y in zip(closed, auto, strict=True):
        torch.testing.assert_close(x, y)
        assert not y.requires_grad


def test_unknown_learner_name_lists_valid_names():
    with pytest.raises(UserError) as err:
        make_learner("momentum", two_tensors(0), LearnerConfig())
    for name in ("static", "ogd", "optimistic", "ensemble", "sgd-momentum", "adamw"):
        assert name in str(err.value)


def test_state_of_another_learner_is_refused():
    ogd_state = make_learner("ogd", two_tensors(0)).state_dict()
    with pytest.raises(UserError, match="saved by 'ogd'"):
        make_learner("optimistic", two_tensors(0)).load_state_dict(ogd_state)


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="passes"):
        LearnerConfig(passes=0)


def test_non_finite_gradient_raises_and_leaves_params():
    params = [torch.tensor([1.0])]
    learner = make_learner("ogd", params, LearnerConfig())
    with pytest.raises(FloatingPointError):
        learner.update(lambda v: (float("nan"), [torch.tensor([float("nan")])]))
    assert params[0].item() == 1.0


def test_an_unset_lr_is_the_learners_default():
    """One table of defaults (base.DEFAULT_LR): textbook OGD steps 0.1, Adam steps 5e-4; a given lr wins."""
    assert make_learner("ogd", two_tensors(0)).cfg.lr == 0.1
    assert make_learner("ogd", two_tensors(0), LearnerConfig(step="adam")).cfg.lr == 5e-4
    assert make_learner("optimistic", two_tensors(0), LearnerConfig(step="adagrad")).cfg.lr == 1e-3
    assert make_learner("adamw", two_tensors(0)).cfg.lr == 5e-4
    assert make_learner("ensemble", two_tensors(0), LearnerConfig(lr=0.3, step="adam")).cfg.lr == 0.3
