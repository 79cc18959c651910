"""Exact tests of the adaptive steps and Hedge variants (docs/method.md §2, "Adaptive versions"; issue 11.1).

Hand computations use float64 parameters and LINEAR losses l_t(w) = <g_t, w> (the gradient g_t is given, whatever
w is), so every expected value below is the rule written out by hand. Quadratic losses 0.5 ||w - c_t||^2 serve the
Hedge tests, where experts must differ in loss. The hand computations of the adaptive steps pin lr_warmup=0 (the
rule itself; adagrad and adam ramp their step over 10 updates by default): the ramp has its own tests below.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from onlinespec.errors import UserError
from onlinespec.online.learners import LearnerConfig, expert_lrs, fixed_share, hedge_weights, make_learner
from onlinespec.online.state_store import load_state, save_state

EPS = 1e-8


def linear(grads: list[list[float]]):
    """grad_fn of l(w) = <g, w> for a single float64 vector parameter; records where it was called."""
    g = [torch.tensor(grads[0], dtype=torch.float64)]

    def grad_fn(values: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        grad_fn.calls.append([v.clone() for v in values])
        return float((values[0] * g[0]).sum()), [g[0].clone()]

    grad_fn.calls = []
    return grad_fn


def quadratic(targets: list[torch.Tensor]):
    def grad_fn(values: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        grads = [v - c for v, c in zip(values, targets, strict=True)]
        return 0.5 * sum(float((g * g).sum()) for g in grads), grads

    return grad_fn


def vec(*xs: float) -> list[torch.Tensor]:
    return [torch.tensor(xs, dtype=torch.float64)]


def two_tensors(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, generator=g), torch.randn(2, 2, generator=g)]


# ---- OGD with a per-coordinate step ----------------------------------------------------------------------------


def test_adagrad_ogd_three_rounds_by_hand():
    # eta = 0.5, w_0 = (0, 0), gradients (1, -2), (3, 0), (0, 2); G accumulates g^2 per coordinate.
    # t=1: G = (1, 4)   w = (0, 0) - 0.5 (1/(1+e), -2/(2+e))                      = (-0.5, 0.5)   (up to eps)
    # t=2: G = (10, 4)  w = w - 0.5 (3/(sqrt10+e), 0/(2+e))
    # t=3: G = (10, 8)  w = w - 0.5 (0/(sqrt10+e), 2/(sqrt8+e))
    params = vec(0.0, 0.0)
    learner = make_learner("ogd", params, LearnerConfig(lr_warmup=0, lr=0.5, clip=0.0, step="adagrad"))
    a = -0.5 / (1 + EPS)
    b = 0.5 * 2 / (2 + EPS)
    expected = [(a, b)]
    a -= 0.5 * 3 / (math.sqrt(10) + EPS)
    expected.append((a, b))
    b -= 0.5 * 2 / (math.sqrt(8) + EPS)
    expected.append((a, b))
    for g, w in zip([[1.0, -2.0], [3.0, 0.0], [0.0, 2.0]], expected, strict=True):
        learner.update(linear([g]))
        assert params[0].tolist() == pytest.approx(list(w), rel=1e-15, abs=1e-15)
    assert learner.precond.sum_sq[0].tolist() == [10.0, 8.0]


def test_adam_ogd_two_rounds_by_hand_with_bias_correction():
    # eta = 0.1, betas (0.9, 0.95) (the default adam_betas), w_0 = 0, gradients 2 then 1.
    # s=1: m = 0.1*2 = 0.2, v = 0.05*4 = 0.2; m_hat = 0.2/0.1 = 2, v_hat = 0.2/0.05 = 4; w = -0.1 * 2/(2+e).
    # s=2: m = 0.9*0.2 + 0.1*1 = 0.28, v = 0.95*0.2 + 0.05*1 = 0.24; m_hat = 0.28/0.19, v_hat = 0.24/0.0975.
    params = vec(0.0)
    learner = make_learner("ogd", params, LearnerConfig(lr_warmup=0, lr=0.1, clip=0.0, step="adam"))
    learner.update(linear([[2.0]]))
    w1 = -0.1 * 2 / (2 + EPS)
    assert params[0].item() == pytest.approx(w1, rel=1e-15)
    learner.update(linear([[1.0]]))
    m_hat, v_hat = 0.28 / (1 - 0.9**2), 0.24 / (1 - 0.95**2)
    assert params[0].item() == pytest.approx(w1 - 0.1 * m_hat / (math.sqrt(v_hat) + EPS), rel=1e-14)
    assert learner.precond.steps == 2
    assert learner.precond.exp_avg[0].item() == pytest.approx(0.28, rel=1e-15)
    assert learner.precond.exp_avg_sq[0].item() == pytest.approx(0.24, rel=1e-15)


def test_adam_ogd_matches_torch_adam_over_passes_and_rounds():
    cfg = LearnerConfig(lr_warmup=0, lr=0.05, clip=0.0, passes=2, step="adam", adam_betas=(0.9, 0.95))
    params = two_tensors(0)
    reference = [p.clone().requires_grad_(True) for p in params]
    optimizer = torch.optim.Adam(reference, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.eps)
    learner = make_learner("ogd", params, cfg)
    for t in range(4):
        targets = two_tensors(10 + t)
        learner.update(quadratic(targets))
        for _ in range(cfg.passes):
            for r, c in zip(reference, targets, strict=True):
                r.grad = (r - c).detach()
            optimizer.step()
    for p, r in zip(params, reference, strict=True):
        torch.testing.assert_close(p, r.detach(), rtol=1e-6, atol=1e-7)


def test_adaptive_step_is_clipped_then_projected():
    # g = (3, 4) clipped to (0.6, 0.8); AdaGrad direction = sign per coordinate = (1, 1) (up to eps);
    # lr 2 lands near (-2, -2), outside the ball of radius 1 around w_0 = 0 -> rescaled onto it (~ -1/sqrt2 each).
    params = vec(0.0, 0.0)
    learner = make_learner("ogd", params, LearnerConfig(lr_warmup=0, lr=2.0, clip=1.0, radius=1.0, step="adagrad"))
    learner.update(linear([[3.0, 4.0]]))
    assert learner.precond.sum_sq[0].tolist() == pytest.approx([0.36, 0.64], rel=1e-15)
    u = [0.6 / (0.6 + EPS), 0.8 / (0.8 + EPS)]
    assert params[0].tolist() == pytest.approx([-x / math.hypot(*u) for x in u], rel=1e-14)


def test_low_precision_params_keep_fp32_step_state():
    params = [torch.zeros(4, dtype=torch.bfloat16)]
    learner = make_learner("ogd", params, LearnerConfig(lr_warmup=0, lr=0.5, clip=0.0, step="adam"))
    learner.update(lambda v: (0.0, [torch.full((4,), 1e-3, dtype=torch.bfloat16)]))
    assert learner.precond.exp_avg_sq[0].dtype == torch.float32 and params[0].dtype == torch.bfloat16
    assert params[0].float().tolist() == pytest.approx([-0.5] * 4, rel=1e-2)


# ---- optimistic OGD on the preconditioned step -----------------------------------------------------------------


def test_optimistic_adagrad_three_rounds_by_hand():
    # eta = 0.5, w_0 = v_1 = 0, h_1 = 0, gradients 2, 1, -1 (D = sqrt(G) + eps, G = sum of g^2).
    # t=1: err |2 - 0| = 2. G = 4:  v2 = -0.5*2/(2+e),  h2 = 2,  w2 = v2 - 0.5*2/(2+e)              (~ -1.0)
    # t=2: err |1 - 2| = 1. G = 5:  v3 = v2 - 0.5/(sqrt5+e), h3 = 1, w3 = v3 - 0.5*1/(sqrt5+e)
    # t=3: err |-1 - 1| = 2. G = 6: v4 = v3 + 0.5/(sqrt6+e), h4 = -1, w4 = v4 + 0.5/(sqrt6+e)
    params = vec(0.0)
    learner = make_learner("optimistic", params, LearnerConfig(lr_warmup=0, lr=0.5, clip=0.0, step="adagrad"))
    d1, d2, d3 = 2 + EPS, math.sqrt(5) + EPS, math.sqrt(6) + EPS
    v2 = -1 / d1
    v3 = v2 - 0.5 / d2
    v4 = v3 + 0.5 / d3
    expected = [(v2 - 1 / d1, v2, 2.0, 2.0), (v3 - 0.5 / d2, v3, 1.0, 1.0), (v4 + 0.5 / d3, v4, -1.0, 2.0)]
    for g, (w, v, h, err) in zip([2.0, 1.0, -1.0], expected, strict=True):
        fn = linear([[g]])
        info = learner.update(fn)
        assert params[0].item() == pytest.approx(w, rel=1e-15)
        assert learner.anchor[0].item() == pytest.approx(v, rel=1e-15)
        assert (learner.hint[0].item(), info["hint_error"]) == (h, err)


def test_optimistic_ema_hint_by_hand():
    # As above with hint_ema = 0.5: h2 = 0.5*0 + 0.5*2 = 1, w2 = v2 - 0.5*1/(2+e);
    # t=2: err |1 - 1| = 0, h3 = 0.5*1 + 0.5*1 = 1, w3 = v3 - 0.5*1/(sqrt5+e).
    params = vec(0.0)
    learner = make_learner(
        "optimistic", params, LearnerConfig(lr_warmup=0, lr=0.5, clip=0.0, step="adagrad", hint_ema=0.5)
    )
    d1, d2 = 2 + EPS, math.sqrt(5) + EPS
    info = learner.update(linear([[2.0]]))
    assert (learner.hint[0].item(), info["hint_error"]) == (1.0, 2.0)
    assert params[0].item() == pytest.approx(-1 / d1 - 0.5 / d1, rel=1e-15)
    info = learner.update(linear([[1.0]]))
    assert (learner.hint[0].item(), info["hint_error"]) == (1.0, 0.0)
    assert params[0].item() == pytest.approx(-1 / d1 - 0.5 / d2 - 0.5 / d2, rel=1e-15)


@pytest.mark.parametrize("step", ["sgd", "adagrad", "adam"])
def test_optimistic_anchor_moves_as_ogd_and_publishes_anchor_minus_preconditioned_hint(step):
    # With linear losses the gradients do not depend on w, so the anchor must follow OGD with the same step exactly,
    # and the published point is Pi(v - eta D^{-1} h) with h the last gradient.
    cfg = LearnerConfig(lr_warmup=0, lr=0.1, clip=0.0, step=step)
    ogd_params, opt_params = vec(0.5, -1.0, 2.0), vec(0.5, -1.0, 2.0)
    ogd, opt = make_learner("ogd", ogd_params, cfg), make_learner("optimistic", opt_params, cfg)
    for g in ([1.0, -2.0, 0.5], [0.25, 3.0, -1.0], [-2.0, 0.0, 4.0]):
        ogd.update(linear([g]))
        opt.update(linear([g]))
        assert torch.equal(opt.anchor[0], ogd_params[0])
        hint = torch.tensor(g, dtype=torch.float64)
        assert torch.equal(opt.hint[0], hint)
        torch.testing.assert_close(opt_params[0], opt.anchor[0] - 0.1 * opt.precond.scale([hint])[0], rtol=0, atol=0)


def test_optimistic_passes_reevaluate_at_preconditioned_decision():
    # eta = 0.5, AdaGrad, gradient 2 in both passes. Pass 1 at w1 = 0: G = 4, v = -0.5*2/(2+e).
    # Pass 2 at Pi(v - eta D^{-1} g) = v - 0.5*2/(2+e): G = 8, v -= 0.5*2/(sqrt8+e). Publish v - 0.5*2/(sqrt8+e).
    params = vec(0.0)
    learner = make_learner("optimistic", params, LearnerConfig(lr_warmup=0, lr=0.5, clip=0.0, step="adagrad", passes=2))
    fn = linear([[2.0]])
    learner.update(fn)
    d1, d2 = 2 + EPS, math.sqrt(8) + EPS
    v1 = -1 / d1
    assert [c[0].item() for c in fn.calls] == [0.0, pytest.approx(v1 - 1 / d1, rel=1e-15)]
    assert learner.anchor[0].item() == pytest.approx(v1 - 1 / d2, rel=1e-15)
    assert params[0].item() == pytest.approx(v1 - 2 / d2, rel=1e-15)


# ---- Hedge: grid, anytime rate, fixed share -------------------------------------------------------------------------


def test_centred_grid_straddles_lr():
    assert expert_lrs(LearnerConfig(lr=0.25, experts=3, lr_grid="centred")) == [0.125, 0.25, 0.5]
    assert expert_lrs(LearnerConfig(lr=1.0, experts=4, lr_ratio=4.0, lr_grid="centred")) == [0.125, 0.5, 2.0, 8.0]
    assert expert_lrs(LearnerConfig(lr=0.25, experts=3)) == [0.25, 0.5, 1.0]  # "up", today's grid
    info = make_learner("ensemble", vec(0.0), LearnerConfig(lr=0.25, lr_grid="centred")).update(quadratic(vec(1.0)))
    assert info["expert_lrs"] == [0.125, 0.25, 0.5]


def test_fixed_share_two_rounds_by_hand():
    # p = uniform over 3, gamma 1, share 0.1. Round 1 losses (0, 1, 2): q ∝ (1, e^-1, e^-2); p = 0.9 q + 0.1/3.
    # Round 2 losses (2, 0, 0): q ∝ p * (e^-2, 1, 1); p = 0.9 q + 0.1/3.
    p = fixed_share([1 / 3] * 3, [0.0, 1.0, 2.0], 1.0, 0.1)
    z = 1 + math.exp(-1) + math.exp(-2)
    p1 = [0.9 * x / z + 0.1 / 3 for x in (1, math.exp(-1), math.exp(-2))]
    assert p == pytest.approx(p1, rel=1e-15)
    q = [p1[0] * math.exp(-2), p1[1], p1[2]]
    assert fixed_share(p, [2.0, 0.0, 0.0], 1.0, 0.1) == pytest.approx(
        [0.9 * x / sum(q) + 0.1 / 3 for x in q], rel=1e-14
    )
    assert fixed_share([0.2, 0.8], [5.0, 1.0], 1.0, 0.0) == pytest.approx(hedge_weights([math.log(4) + 4, 0.0], 1.0))


def test_fixed_share_lets_weights_move_back_after_a_shift():
    # 30 rounds where expert 0 is better by 1, then 10 where expert 2 is better by 1 (gamma 1): plain Hedge on
    # cumulative losses still sits on expert 0 (L differs by 20), fixed share has moved to expert 2.
    stream = [[0.0, 0.5, 1.0]] * 30 + [[1.0, 0.5, 0.0]] * 10
    totals = [sum(r[i] for r in stream) for i in range(3)]
    assert hedge_weights(totals, 1.0)[0] > 0.99
    p = [1 / 3] * 3
    for losses in stream:
        p = fixed_share(p, losses, 1.0, 0.05)
    assert p[2] > 0.9 and min(p) >= 0.05 / 3


def test_ensemble_fixed_share_and_anytime_rate_by_hand():
    # Experts eta = 0.25, 0.5, 1 from w_0 = 0 towards c = 1 (gamma multiplier 2, share 0.2, anytime rate).
    # Round 1: all experts at 0, losses (0.5, 0.5, 0.5): B = 0 -> gamma_1 = 0, weights stay uniform.
    # Round 2: experts at 0.25, 0.5, 1: losses (0.28125, 0.125, 0): B = 0.28125,
    #          gamma_2 = 2 sqrt(8 ln 3 / 2) / B; p = fixed_share(uniform, losses, gamma_2, 0.2).
    cfg = LearnerConfig(lr=0.25, clip=0.0, gamma=2.0, hedge_rate="anytime", share=0.2)
    params = vec(0.0)
    learner = make_learner("ensemble", params, cfg)
    info = learner.update(quadratic(vec(1.0)))
    assert (info["hedge_gamma"], info["loss_range"]) == (0.0, 0.0)
    assert info["weights"] == pytest.approx([1 / 3] * 3, rel=1e-15)
    info = learner.update(quadratic(vec(1.0)))
    assert info["expert_losses"] == [0.28125, 0.125, 0.0] and info["loss_range"] == 0.28125
    gamma = 2 * math.sqrt(8 * math.log(3) / 2) / 0.28125
    assert info["hedge_gamma"] == pytest.approx(gamma, rel=1e-15)
    p = fixed_share([1 / 3] * 3, [0.28125, 0.125, 0.0], gamma, 0.2)
    assert info["weights"] == pytest.approx(p, rel=1e-14)
    experts = [0.25 + 0.25 * 0.75, 0.75, 1.0]
    assert [e[0].item() for e in learner.experts] == experts
    assert params[0].item() == pytest.approx(sum(a * b for a, b in zip(p, experts, strict=True)), rel=1e-14)


def test_ensemble_anytime_rate_without_share_is_softmax_of_cumulative_losses():
    cfg = LearnerConfig(lr=0.25, clip=0.0, hedge_rate="anytime")
    learner = make_learner("ensemble", vec(0.0), cfg)
    for _ in range(3):
        info = learner.update(quadratic(vec(1.0)))
    gamma = math.sqrt(8 * math.log(3) / 3) / info["loss_range"]
    assert info["hedge_gamma"] == pytest.approx(gamma, rel=1e-15)
    assert info["weights"] == pytest.approx(hedge_weights(info["cumulative_losses"], gamma), rel=1e-15)


def test_ensemble_experts_use_the_chosen_step():
    # Each expert is an AdaGrad-OGD with its own G: one round on gradient (1, -2) moves expert i by eta_i (1, -1).
    learner = make_learner("ensemble", vec(0.0, 0.0), LearnerConfig(lr_warmup=0, lr=0.5, clip=0.0, step="adagrad"))
    learner.update(linear([[1.0, -2.0]]))
    for expert, lr in zip(learner.experts, [0.5, 1.0, 2.0], strict=True):
        assert expert[0].tolist() == pytest.approx([-lr, lr], rel=1e-7)
    assert all(pc.sum_sq[0].tolist() == [1.0, 4.0] for pc in learner.preconds)


# ---- telemetry -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["static", "ogd", "optimistic", "ensemble", "sgd-momentum", "adamw"])
def test_update_norm_ratio_is_relative_change_of_published_params(name):
    params = two_tensors(0)
    before = [p.clone() for p in params]
    info = make_learner(name, params, LearnerConfig(lr=0.1, step="adam")).update(quadratic(two_tensors(1)))
    change = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(params, before, strict=True)))
    norm = math.sqrt(sum(float((b * b).sum()) for b in before))
    assert info["update_norm_ratio"] == pytest.approx(change / norm, rel=1e-5, abs=1e-12)


def test_update_norm_ratio_by_hand_and_undefined_at_zero():
    params = vec(2.0)
    info = make_learner("ogd", params, LearnerConfig(lr=0.5, clip=0.0)).update(quadratic(vec(0.0)))  # 2 -> 1
    assert info["update_norm_ratio"] == 0.5
    info = make_learner("ogd", vec(0.0), LearnerConfig(lr=0.5, clip=0.0)).update(quadratic(vec(1.0)))
    assert info["update_norm_ratio"] is None  # ||w_t|| = 0: no ratio


# ---- the step-size ramp (lr_warmup) ---------------------------------------------------------------------------------


def test_lr_warmup_ramps_the_textbook_step_by_hand():
    # eta = 0.5, lr_warmup = 4, gradient 1 every round: eta_t = 0.5 * t / 4 for t <= 4, then 0.5.
    # w: -0.125, -0.375, -0.75, -1.25, -1.75
    params = vec(0.0)
    learner = make_learner("ogd", params, LearnerConfig(lr=0.5, clip=0.0, lr_warmup=4))
    seen = []
    for _ in range(5):
        learner.update(linear([[1.0]]))
        seen.append(float(params[0]))
    assert seen == pytest.approx([-0.125, -0.375, -0.75, -1.25, -1.75])


def test_lr_warmup_shrinks_adams_first_step_whatever_the_gradient_scale():
    # Adam's first u is m_hat / sqrt(v_hat) = g / |g| (up to eps): every coordinate moves by eta, tiny gradient or not.
    # With lr_warmup = 10 the first update moves each by eta / 10.
    for warmup, moved in ((0, 0.1), (10, 0.01)):
        params = vec(0.0, 0.0)
        make_learner("ogd", params, LearnerConfig(lr=0.1, clip=0.0, step="adam", lr_warmup=warmup)).update(
            linear([[1e-3, -5.0]])
        )
        assert params[0].tolist() == pytest.approx([-moved, moved], rel=1e-4)


def test_adaptive_steps_ramp_over_ten_updates_by_default_and_sgd_does_not():
    for step, first in (("sgd", 1.0), ("adagrad", 0.1), ("adam", 0.1)):
        learner = make_learner("ogd", vec(0.0), LearnerConfig(step=step))
        assert learner.warmup() == pytest.approx(first), step
    for _ in range(9):
        learner.update(linear([[1.0]]))
    assert learner.warmup() == 1.0  # the 10th update steps with the full eta


@pytest.mark.parametrize(("name", "fields"), [("ogd", {}), ("optimistic", {"step": "adam"}), ("ensemble", {})])
def test_lr_warmup_is_a_smaller_eta_in_every_learners_first_rounds(name, fields):
    """After one round, lr_warmup = 3 equals eta / 3 without a ramp; the ramp then climbs to eta (round 3 on)."""
    grads = [two_tensors(200 + t) for t in range(4)]
    ramped = make_learner(name, two_tensors(0), LearnerConfig(lr=0.3, clip=0.0, lr_warmup=3, **fields))
    third = make_learner(name, two_tensors(0), LearnerConfig(lr_warmup=0, lr=0.1, clip=0.0, **fields))
    ramped.update(quadratic(grads[0]))
    third.update(quadratic(grads[0]))
    for a, b in zip(ramped.params, third.params, strict=True):
        torch.testing.assert_close(a, b)
    assert ramped.warmup() == pytest.approx(2 / 3)  # the factor of the update played next
    ramped.update(quadratic(grads[1]))
    ramped.update(quadratic(grads[2]))
    assert ramped.warmup() == 1.0


# ---- state: exact resume mid-stream, through torch.save and the --draft-state store ---------------------------------

ADAPTIVE_CASES = [
    ("ogd", {"step": "adagrad"}),
    ("ogd", {"step": "adam"}),
    ("optimistic", {"step": "adagrad"}),
    ("optimistic", {"step": "adam", "hint_ema": 0.5}),
    ("ensemble", {"step": "adam", "lr_grid": "centred", "hedge_rate": "anytime", "share": 0.1}),
    ("ensemble", {"step": "adagrad", "share": 0.05}),
    ("ogd", {"step": "adam", "lr_warmup": 5}),  # mid-ramp at the interruption: the ramp continues where it was
]


def adaptive_config(**fields) -> LearnerConfig:
    return LearnerConfig(lr=0.05, clip=1.5, radius=1.0, passes=2, experts=3, gamma=2.0, **fields)


@pytest.mark.parametrize(("name", "fields"), ADAPTIVE_CASES)
@pytest.mark.parametrize("store", ["torch", "draft-state"])
def test_adaptive_state_resume_continues_bit_identically(name, fields, store, tmp_path: Path):
    cfg = adaptive_config(**fields)
    warm_start = two_tensors(0)
    rounds = [quadratic(two_tensors(100 + t)) for t in range(6)]
    uninterrupted = make_learner(name, [p.clone() for p in warm_start], cfg)
    for fn in rounds[:3]:
        uninterrupted.update(fn)
    if store == "torch":
        buffer = io.BytesIO()
        torch.save(uninterrupted.state_dict(), buffer)
    else:
        save_state(tmp_path, {"w": warm_start[0]}, uninterrupted.state_dict(), {"round": 3, "draft": "d"})
    expected = [uninterrupted.update(fn) for fn in rounds[3:]]  # keeps going AFTER the save: the save must not move

    resumed = make_learner(name, [p.clone() for p in warm_start], cfg)
    if store == "torch":
        buffer.seek(0)
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
    else:
        resumed.load_state_dict(load_state(tmp_path)[1])
    got = [resumed.update(fn) for fn in rounds[3:]]
    assert got == expected
    for a, b in zip(resumed.params, uninterrupted.params, strict=True):
        assert torch.equal(a, b)


def test_state_saved_with_another_step_is_refused():
    state = make_learner("ogd", two_tensors(0), LearnerConfig(step="adam")).state_dict()
    with pytest.raises(UserError, match="step 'adam'"):
        make_learner("ogd", two_tensors(0), LearnerConfig(step="adagrad")).load_state_dict(state)


def test_state_saved_before_adaptive_steps_loads_as_sgd():
    old = make_learner("ensemble", two_tensors(0), LearnerConfig(gamma=2.0))
    old.update(quadratic(two_tensors(1)))
    state = old.state_dict()
    for key in ("preconditioners", "weights", "loss_range"):
        del state[key]
    new = make_learner("ensemble", two_tensors(0), LearnerConfig(gamma=2.0))
    new.load_state_dict(state)
    assert new.weights() == old.weights()
    assert new.update(quadratic(two_tensors(2))) == old.update(quadratic(two_tensors(2)))


@pytest.mark.parametrize(
    ("field", "value"),
    [("step", "rmsprop"), ("eps", 0.0), ("adam_betas", (0.9, 1.0)), ("hint_ema", 1.0), ("lr_grid", "down")]
    + [("hedge_rate", "doubling"), ("share", 1.5)],
)
def test_bad_adaptive_settings_are_user_errors(field, value):
    with pytest.raises(UserError, match=field):
        LearnerConfig(**{field: value})


# ---- sanity: conditioning is what the adaptive step fixes ---------------------------------------------------------


def regression_stream(rounds: int, seed: int):
    """Online least squares with ill-conditioned features (scales 10, 1, 0.1, 0.01): round t's loss is the mean of
    0.5 (<w, x> - y)^2 over a mini-batch of 8 fresh samples, y = <w*, x> + noise."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([10.0, 1.0, 0.1, 0.01], dtype=torch.float64)
    w_star = torch.tensor([1.0, -2.0, 3.0, -4.0], dtype=torch.float64)
    batches = []
    for _ in range(rounds):
        x = torch.randn(8, 4, generator=g, dtype=torch.float64) * scales
        batches.append((x, x @ w_star + 0.01 * torch.randn(8, generator=g, dtype=torch.float64)))
    return batches, w_star, scales


def population_loss(w: torch.Tensor, w_star: torch.Tensor, scales: torch.Tensor) -> float:
    """E 0.5 (<w - w*, x>)^2 for x ~ N(0, diag(scales^2)) (noise excluded)."""
    return 0.5 * float((((w - w_star) * scales) ** 2).sum())


def run_regression(name: str, step: str, lr: float, batches) -> torch.Tensor:
    """The final iterate; all-inf if the learner diverged (it raises FloatingPointError on a non-finite loss)."""
    params = [torch.zeros(4, dtype=torch.float64)]
    learner = make_learner(name, params, LearnerConfig(lr_warmup=0, lr=lr, clip=0.0, step=step))
    for x, y in batches:
        try:
            learner.update(lambda v, x=x, y=y: (0.5 * float(((x @ v[0] - y) ** 2).mean()), [x.T @ (x @ v[0] - y) / 8]))
        except FloatingPointError:
            return torch.full((4,), math.inf, dtype=torch.float64)
    return params[0]


@pytest.mark.parametrize("name", ["ogd", "optimistic"])
def test_adaptive_steps_beat_the_best_sgd_step_on_an_ill_conditioned_stream(name):
    # Each step gets its best learning rate from the same grid; 200 rounds. SGD must keep eta < 2/100 to be stable
    # on the 10x feature, so the 0.01x feature (curvature 1e-4) barely moves; AdaGrad and Adam scale per coordinate.
    batches, w_star, scales = regression_stream(200, seed=0)
    grid = [10.0**e for e in range(-4, 1)] + [3 * 10.0**e for e in range(-4, 0)]

    def best(step: str) -> float:
        finals = [population_loss(run_regression(name, step, lr, batches), w_star, scales) for lr in grid]
        return min(x for x in finals if math.isfinite(x))

    sgd, adagrad, adam = best("sgd"), best("adagrad"), best("adam")
    start = population_loss(torch.zeros(4, dtype=torch.float64), w_star, scales)
    assert sgd < start  # the textbook step does learn, just slowly
    assert adagrad < 0.1 * sgd and adam < 0.1 * sgd, (sgd, adagrad, adam)
