"""Speculative sampling must reproduce the target's own sampling distribution exactly (docs/method.md §1).

Tested statistically with fixed seeds: a chi-square goodness-of-fit test against the exact target distribution.
A deliberately broken verifier (on rejection, resample from p instead of the residual max(0, p - q)) must fail
the same test: with the distributions below it scores p-values below 1e-30 while the real one stays above 1e-3.
"""

from __future__ import annotations

import itertools

import torch
from conftest import draft_of, noisy_copy, run_spec, tiny_llama
from scipy.stats import chisquare

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.sampling import SamplingConfig, probs_from_logits, sample
from onlinespec.decoding.verify import verify_sampling

PASS_P_VALUE = 1e-3


def broken_verify(target_probs, draft_probs, draft_tokens, generator):
    """The classic bug: on rejection sample from p, not from the residual. Biased towards q's favourites."""
    k = draft_tokens.shape[0]
    rows = torch.arange(k)
    u = torch.rand(k, generator=generator)
    accepted = u * draft_probs[rows, draft_tokens] <= target_probs[rows, draft_tokens]
    n = accepted.long().cumprod(0).sum()
    return n, sample(target_probs[n : n + 1], generator)[0]


def emitted_tokens(verify, p, q, trials: int, seed: int):
    """Run one verify step `trials` times; return the first emitted token and, when the first draft was
    accepted, the second one."""
    gen = torch.Generator().manual_seed(seed)
    first, second = [], []
    for _ in range(trials):
        drafts = sample(q, gen)
        n, nxt = verify(p, q, drafts, gen)
        tokens = drafts[:n].tolist() + [int(nxt)]
        first.append(tokens[0])
        if n >= 1:
            second.append(tokens[1])
    return torch.tensor(first), torch.tensor(second)


def chi2_p_value(samples: torch.Tensor, probs: torch.Tensor) -> float:
    """Goodness of fit of integer samples to `probs` over the cells where probs > 0 (samples must lie there)."""
    support = probs > 0
    assert bool(support[samples].all()), "a sample fell where the distribution is 0"
    observed = torch.bincount(samples, minlength=probs.shape[0]).double()[support]
    expected = probs.double()[support]
    expected = expected / expected.sum() * observed.sum()
    return float(chisquare(observed.numpy(), expected.numpy()).pvalue)


def fixed_distributions(vocab: int = 6, k: int = 3):
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(k + 1, vocab, generator=gen) * 1.5, dim=-1)
    q = torch.softmax(torch.randn(k, vocab, generator=gen) * 1.5, dim=-1)
    return p, q


def test_verify_sampling_first_and_second_tokens_follow_p() -> None:
    p, q = fixed_distributions()
    first, second = emitted_tokens(verify_sampling, p, q, trials=20000, seed=1)
    assert chi2_p_value(first, p[0]) > PASS_P_VALUE
    assert chi2_p_value(second, p[1]) > PASS_P_VALUE


def test_broken_verifier_fails_the_same_test() -> None:
    p, q = fixed_distributions()
    first, _ = emitted_tokens(broken_verify, p, q, trials=20000, seed=1)
    print("broken verifier p-value", chi2_p_value(first, p[0]))
    assert chi2_p_value(first, p[0]) < 1e-10


def test_verify_sampling_accepts_everything_when_q_equals_p() -> None:
    p, _ = fixed_distributions()
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        drafts = sample(p[:3], gen)
        n, _ = verify_sampling(p, p[:3], drafts, gen)
        assert int(n) == 3


def exact_two_token_distribution(target, prompt: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """P(x1, x2 | prompt) under the target's own processed sampling, flattened to [V*V]."""
    with torch.no_grad():
        p1 = probs_from_logits(target(prompt[None]).logits[0, -1], sampling)
        vocab = p1.shape[0]
        contexts = torch.cat([prompt.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)
        p2 = probs_from_logits(target(contexts).logits[:, -1], sampling)  # [V, V]
    return (p1[:, None] * p2).flatten()


def test_engine_sampling_matches_target_distribution() -> None:
    vocab = 6
    target = tiny_llama(seed=11, vocab=vocab, layers=1)  # one layer: the rule needs no depth; CI time does
    draft = noisy_copy(target, 1.0, seed=12)  # a poor draft: many rejections exercise the residual
    prompt = torch.tensor([1, 4, 2])
    sampling = SamplingConfig(temperature=1.0, top_k=5)
    exact = exact_two_token_distribution(target, prompt, sampling)
    engine = SpeculativeEngine(target, draft_of(draft, vocab))
    pairs, drafted, accepted = [], 0, 0
    for seed in range(2000):
        tokens, stats = run_spec(engine, prompt, GenerationConfig(max_new_tokens=3, k=2, sampling=sampling, seed=seed))
        pairs.append(tokens[0] * vocab + tokens[1])
        drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
    assert 0.2 < accepted / drafted < 0.95  # both the accept and the residual paths were exercised
    assert chi2_p_value(torch.tensor(pairs), exact) > PASS_P_VALUE


def test_top_k_and_top_p_processing() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    top2 = probs_from_logits(logits, SamplingConfig(temperature=1.0, top_k=2))
    assert (top2[0, 2:] == 0).all() and torch.allclose(top2.sum(), torch.tensor(1.0))
    probs = torch.softmax(logits, -1)[0]  # [0.56, 0.21, 0.13, 0.08, 0.03]
    nucleus = probs_from_logits(logits, SamplingConfig(temperature=1.0, top_p=0.7))
    assert (nucleus[0, :2] > 0).all() and (nucleus[0, 2:] == 0).all()  # 0.56 < 0.7 <= 0.56 + 0.21
    assert float(probs[0]) < 0.7
    cold = probs_from_logits(logits, SamplingConfig(temperature=0.1))
    assert float(cold[0, 0]) > 0.99
    for combo in itertools.product([0, 2, 4], [1.0, 0.5]):
        out = probs_from_logits(logits, SamplingConfig(temperature=0.7, top_k=combo[0], top_p=combo[1]))
        assert torch.allclose(out.sum(-1), torch.tensor(1.0))
