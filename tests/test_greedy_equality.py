"""Greedy speculative output must equal greedy autoregressive output token for token (fp32, tiny models)."""

from __future__ import annotations

import pytest
import torch
from conftest import draft_of, noisy_copy, run_ar, run_spec, tiny_llama

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.drafts.layerskip import build_layerskip_model

VOCAB = 96


def drafts_for(target):
    return {
        "layerskip:1": build_layerskip_model(target, 1),
        "layerskip:3": build_layerskip_model(target, 3),
        "noisy-0.1": noisy_copy(target, 0.1),
        "noisy-0.5": noisy_copy(target, 0.5),
        "self": target,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_greedy_spec_equals_ar(seed: int, k: int) -> None:
    target = tiny_llama(seed=seed)
    prompt = torch.randint(0, VOCAB, (5 + seed * 7,), generator=torch.Generator().manual_seed(seed))
    cfg = GenerationConfig(max_new_tokens=40, k=k)
    expected, _ = run_ar(target, prompt, cfg)
    assert len(expected) == 40
    for name, draft_model in drafts_for(target).items():
        got, stats = run_spec(SpeculativeEngine(target, draft_of(draft_model, VOCAB)), prompt, cfg)
        assert got == expected, f"draft {name}, k={k}, seed={seed}"
        assert stats.new_tokens == 40
        assert stats.target_forwards < 40 or name.startswith("layerskip")


def test_draft_accepts_everything_when_it_is_the_target() -> None:
    target = tiny_llama(seed=3)
    prompt = torch.arange(6)
    cfg = GenerationConfig(max_new_tokens=31, k=5)
    _, stats = run_spec(SpeculativeEngine(target, draft_of(target, VOCAB)), prompt, cfg)
    # 1 prefill token, then 5 steps of k=5 drafts + bonus = 30 tokens.
    assert stats.target_forwards == 6
    assert stats.tau == pytest.approx(31 / 6)
    assert stats.alpha == 1.0
    assert stats.accept_hist == [0, 0, 0, 0, 0, 5]


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_equality_when_eos_is_hit(k: int) -> None:
    target = tiny_llama(seed=4)
    prompt = torch.tensor([3, 14, 15, 92, 65])
    long_run, _ = run_ar(target, prompt, GenerationConfig(max_new_tokens=60, k=k))
    eos = frozenset({long_run[17]})  # a token the target emits mid-way becomes EOS
    first_eos = long_run.index(long_run[17])
    cfg = GenerationConfig(max_new_tokens=60, k=k)
    expected, _ = run_ar(target, prompt, cfg, eos)
    assert expected == long_run[: first_eos + 1]
    for draft_model in (noisy_copy(target, 0.2), target):
        got, stats = run_spec(SpeculativeEngine(target, draft_of(draft_model, VOCAB)), prompt, cfg, eos)
        assert got == expected
        assert stats.new_tokens == len(expected)


def test_max_new_tokens_is_exact_with_long_drafts() -> None:
    target = tiny_llama(seed=5)
    for max_new in (1, 2, 3, 9):
        cfg = GenerationConfig(max_new_tokens=max_new, k=8)
        expected, _ = run_ar(target, torch.arange(4), cfg)
        got, stats = run_spec(SpeculativeEngine(target, draft_of(target, VOCAB)), torch.arange(4), cfg)
        assert got == expected and len(got) == max_new
        assert stats.drafted <= max_new - 1


def test_draft_with_padded_vocabulary_never_proposes_ids_beyond_the_target() -> None:
    target = tiny_llama(seed=6, vocab=VOCAB)
    padded = tiny_llama(seed=7, vocab=VOCAB + 32)  # e.g. an embedding matrix padded to a multiple of 64
    with torch.no_grad():  # make the padding rows the draft's favourite tokens
        padded.lm_head.weight[VOCAB:] *= 20
    draft = draft_of(padded, VOCAB)
    cfg = GenerationConfig(max_new_tokens=30, k=3)
    expected, _ = run_ar(target, torch.arange(5), cfg)
    got, _ = run_spec(SpeculativeEngine(target, draft), torch.arange(5), cfg)
    assert got == expected
    draft.begin(torch.arange(5))
    from onlinespec.decoding.sampling import SamplingConfig

    proposal = draft.propose(torch.arange(5), 4, SamplingConfig(), None)
    assert proposal.logits.shape == (4, VOCAB) and int(proposal.tokens.max()) < VOCAB
