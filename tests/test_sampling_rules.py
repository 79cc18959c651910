"""Logits processing by hand: the bounds of each setting, ties at the top-k cut, the top-p boundary, temperature
(mutation testing found these unchecked, docs/testing.md)."""

from __future__ import annotations

import math

import pytest
import torch

from onlinespec.decoding.sampling import MIN_TEMPERATURE, SamplingConfig, probs_from_logits
from onlinespec.decoding.verify import verify_sampling
from onlinespec.errors import UserError


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": -1e-9}, "temperature must be >= 0"),
        ({"top_k": -1}, "top-k must be >= 0"),
        ({"top_p": 0.0}, r"top-p must be in \(0, 1\]"),
        ({"top_p": 1.0 + 1e-9}, r"top-p must be in \(0, 1\]"),
    ],
)
def test_each_setting_is_refused_just_outside_its_range(settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        SamplingConfig(**settings)


def test_each_setting_is_accepted_at_its_bound_and_greedy_means_below_min_temperature() -> None:
    edge = SamplingConfig(temperature=0.0, top_k=0, top_p=1.0)
    assert edge.greedy and SamplingConfig(top_p=1e-12).top_p == 1e-12
    assert MIN_TEMPERATURE == 1e-5
    assert SamplingConfig(temperature=MIN_TEMPERATURE * 0.99).greedy
    assert not SamplingConfig(temperature=MIN_TEMPERATURE).greedy


def test_temperature_divides_the_logits() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    got = probs_from_logits(logits, SamplingConfig(temperature=2.0))
    assert torch.equal(got, torch.softmax(logits / 2.0, dim=-1))
    assert torch.equal(probs_from_logits(logits, SamplingConfig()), torch.softmax(logits, dim=-1))  # greedy: t = 1


def test_top_k_keeps_ties_at_the_cut_and_is_off_at_the_vocabulary_size() -> None:
    logits = torch.tensor([1.0, 3.0, 1.0, 0.0])
    tied = probs_from_logits(logits, SamplingConfig(temperature=1.0, top_k=2))  # 3 then a tie of two 1s
    expected = torch.softmax(torch.tensor([1.0, 3.0, 1.0, -math.inf]), dim=-1)
    assert torch.equal(tied, expected)
    full = probs_from_logits(logits, SamplingConfig(temperature=1.0, top_k=4))
    assert torch.equal(full, torch.softmax(logits, dim=-1))


def test_top_p_drops_a_token_once_the_mass_before_it_reaches_top_p() -> None:
    logits = torch.tensor([0.5, 0.25, 0.25]).log()  # softmax gives exactly these in float32
    at_boundary = probs_from_logits(logits, SamplingConfig(temperature=1.0, top_p=0.5))
    assert at_boundary.tolist() == [1.0, 0.0, 0.0]  # mass before token 1 is 0.5 >= 0.5: dropped
    above = probs_from_logits(logits, SamplingConfig(temperature=1.0, top_p=0.75))
    torch.testing.assert_close(above, torch.tensor([2 / 3, 1 / 3, 0.0]))  # 0.5 < 0.75 keeps token 1
    tiny = probs_from_logits(logits, SamplingConfig(temperature=1.0, top_p=1e-46))  # underflows float32
    assert tiny.tolist() == [1.0, 0.0, 0.0]  # the top token always stays


def test_top_k_of_one_keeps_only_the_top_token_and_top_p_of_one_keeps_even_a_tiny_tail() -> None:
    logits = torch.tensor([0.0, 2.0, 1.0])
    assert probs_from_logits(logits, SamplingConfig(temperature=1.0, top_k=1)).tolist() == [0.0, 1.0, 0.0]
    tail = torch.tensor([0.0, -25.0])  # p = 1.4e-11: the mass before it rounds to 1.0 in float32
    kept = probs_from_logits(tail, SamplingConfig(temperature=1.0, top_p=1.0))
    assert torch.equal(kept, torch.softmax(tail, dim=-1)) and kept[1] > 0


def test_a_rejection_with_no_residual_mass_falls_back_to_p() -> None:
    """p below q on the draft and nowhere above it (what rounding can leave): the residual max(0, p - q) is all
    zero, so the next token is drawn from p itself."""
    p = torch.tensor([[0.0, 0.5], [0.5, 0.5]])
    q = torch.tensor([[0.5, 0.5]])
    n, token = verify_sampling(p, q, torch.tensor([0]), torch.Generator().manual_seed(0))
    assert (int(n), int(token)) == (0, 1)
