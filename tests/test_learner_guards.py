"""What a learner refuses, and what a resumed one must restore (mutation testing found these unchecked,
docs/testing.md): malformed or non-finite gradients, empty or integer parameters, states of another shape, the
warm start w_0 (centre of the projection), fixed share at zero weights and large losses, the ensemble's loss range."""

from __future__ import annotations

import math

import pytest
import torch

from onlinespec.errors import UserError
from onlinespec.online.learners import (
    BaseLearner,
    LearnerConfig,
    fixed_share,
    global_norm,
    make_learner,
    make_preconditioner,
)


def pull_to(target: float):
    """grad_fn of 0.5 * ||w - target||^2 for one parameter tensor."""
    return lambda v: (0.5 * float((v[0] - target).pow(2).sum()), [v[0] - target])


@pytest.mark.parametrize(
    "grads",
    [[torch.zeros(2), torch.zeros(2)], [torch.zeros(3)]],  # one tensor too many; the right number, a wrong shape
)
def test_gradients_of_another_number_or_shape_are_refused(grads: list[torch.Tensor]) -> None:
    learner = make_learner("ogd", [torch.zeros(2)])
    with pytest.raises(ValueError, match="grad_fn returned gradients whose number or shapes differ"):
        learner.update(lambda v: (0.0, grads))


@pytest.mark.parametrize(("loss", "grad"), [(math.nan, 1.0), (1.0, math.inf)])
def test_a_non_finite_loss_or_gradient_alone_stops_the_update(loss: float, grad: float) -> None:
    params = [torch.tensor([2.0])]
    learner = make_learner("ogd", params, LearnerConfig(lr=0.5))
    with pytest.raises(FloatingPointError, match="parameters left unchanged"):
        learner.update(lambda v: (loss, [torch.tensor([grad])]))
    assert params[0].item() == 2.0


def test_a_learner_needs_floating_point_parameters_and_at_least_one() -> None:
    with pytest.raises(ValueError, match="learner 'ogd' got no parameters to learn"):
        make_learner("ogd", [])
    with pytest.raises(ValueError, match="learner 'ogd' needs floating-point parameters"):
        make_learner("ogd", [torch.zeros(2, dtype=torch.long)])
    with pytest.raises(NotImplementedError):
        BaseLearner([torch.zeros(1)], LearnerConfig()).update(pull_to(1.0))


@pytest.mark.parametrize("saved", [[torch.zeros(2), torch.zeros(2)], [torch.zeros(3)]])
def test_a_state_of_another_shape_is_refused(saved: list[torch.Tensor]) -> None:
    state = {**make_learner("ogd", [torch.zeros(2)]).state_dict(), "params": saved}
    with pytest.raises(UserError, match="learner state 'params' does not match this draft"):
        make_learner("ogd", [torch.zeros(2)]).load_state_dict(state)


def test_a_resumed_learner_projects_around_the_saved_warm_start() -> None:
    cfg = LearnerConfig(lr=1.0, clip=0.0, radius=1.0)
    original = make_learner("ogd", [torch.zeros(1)], cfg)  # w_0 = 0
    original.update(pull_to(0.5))
    resumed = make_learner("ogd", [torch.full((1,), 7.0)], cfg)  # built around another w_0
    resumed.load_state_dict(original.state_dict())
    resumed.update(pull_to(5.0))
    assert resumed.params[0].item() == 1.0  # w = 0.5 - (0.5 - 5) = 5, projected onto the ball |w - 0| <= 1


def test_fixed_share_handles_a_zero_weight_and_large_losses() -> None:
    assert fixed_share([1.0, 0.0], [0.0, 0.0], gamma=1.0, share=0.1) == pytest.approx([0.95, 0.05], rel=1e-15)
    q = fixed_share([0.5, 0.5], [1000.0, 1001.0], gamma=1.0, share=0.0)  # exp(-1000) underflows without the shift
    assert q == pytest.approx([1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))], rel=1e-12)


def test_ensemble_weights_are_a_copy_and_the_anytime_rate_resumes_with_its_loss_range() -> None:
    cfg = LearnerConfig(lr=0.25, clip=0.0, experts=2, hedge_rate="anytime")
    original = make_learner("ensemble", [torch.zeros(1)], cfg)
    original.update(pull_to(1.0))  # both experts start at w_0: equal losses
    original.update(pull_to(4.0))  # now they differ: the loss range B_2 is about 0.9
    weights = original.weights()
    weights[0] = 99.0
    assert original.weights() == original.p and original.weights()[0] != 99.0
    resumed = make_learner("ensemble", [torch.zeros(1)], cfg)
    resumed.load_state_dict(original.state_dict())
    after = original.update(pull_to(1.7))  # a spread of 0.02: the rate still divides by B_2
    assert resumed.update(pull_to(1.7)) == after and after["loss_range"] > 0.9
    with pytest.raises(UserError, match="learner state holds 2 ensemble experts but this learner has 3"):
        make_learner("ensemble", [torch.zeros(1)], LearnerConfig(experts=3)).load_state_dict(original.state_dict())


def test_an_adagrad_state_is_refused_by_an_adam_step_and_a_step_state_of_another_shape_too() -> None:
    adagrad = make_learner("ogd", [torch.zeros(2)], LearnerConfig(step="adagrad"))
    adagrad.update(pull_to(1.0))
    state = adagrad.state_dict()
    with pytest.raises(UserError, match="learner state was saved with step 'adagrad', not 'adam'"):
        make_learner("ogd", [torch.zeros(2)], LearnerConfig(step="adam")).load_state_dict(state)
    for sum_sq in ([torch.zeros(2), torch.zeros(2)], [torch.zeros(3)]):
        bad = {**state, "preconditioner": {**state["preconditioner"], "sum_sq": sum_sq}}
        with pytest.raises(UserError, match="preconditioner state 'sum_sq' does not match this draft"):
            make_learner("ogd", [torch.zeros(2)], LearnerConfig(step="adagrad")).load_state_dict(bad)
    with pytest.raises(UserError, match="unknown step 'rmsprop': choose one of sgd, adagrad, adam"):
        make_preconditioner("rmsprop", [torch.zeros(2)], 1e-8, (0.9, 0.95))


def test_global_norm_of_nothing_is_zero_and_float64_norms_stay_float64() -> None:
    assert global_norm([]) == 0.0
    big = torch.tensor([3e30, 4e30], dtype=torch.float64)  # its square overflows float32
    assert global_norm([big, torch.zeros(1, dtype=torch.float64)]) == 5e30
