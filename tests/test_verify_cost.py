"""Cutting proposals to what the machine's verify cost pays (decoding/verify_cost.py): the rule by hand, its
never-reads-x_i property, exact greedy and sampled output with cuts happening, the measured curve and its cache."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import draft_of, noisy_copy, run_ar, run_spec, tiny_llama
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sampling_exact import PASS_P_VALUE, chi2_p_value, exact_two_token_distribution

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.verify_cost import (
    MEASURED_TOKENS,
    PREFIX_TOKENS,
    REPEATS,
    AcceptanceRates,
    SourceAcceptance,
    VerifyCost,
    cached_verify_cost,
    cut_proposal,
    measure_verify_cost,
    worth_verifying,
)
from onlinespec.drafts.eagle import EagleDraft
from onlinespec.drafts.heads import build_head
from onlinespec.drafts.hybrid import HybridDraft
from onlinespec.drafts.lookup import LookupDraft
from onlinespec.errors import UserError
from onlinespec.models.resolve import LoadedModel
from onlinespec.pipeline import Pipeline

FLAT = VerifyCost((1.0,) * 9)  # verifying is free: every token with any chance is kept
LINEAR = VerifyCost(tuple(float(n) for n in range(1, 10)))  # verifying n tokens costs n steps: never pays


def test_free_verification_keeps_every_possible_token_and_linear_cost_keeps_none() -> None:
    assert worth_verifying([0.3, 0.2, 0.9], [0.3, 0.4, 0.9], FLAT) == 3
    assert worth_verifying([0.3, 0.0, 0.9], [0.3, 0.0, 0.9], FLAT) == 1  # a token that cannot be accepted
    assert worth_verifying([0.99] * 4, [0.99] * 4, LINEAR) == 0
    assert worth_verifying([], [], FLAT) == 0


def test_the_rule_by_hand() -> None:
    cost = VerifyCost((1.0, 1.4, 1.9))
    # token 0: stop = 1/1; keep it alone: (1 + 0.5)/1.4 = 1.071 > 1 -> kept.
    # token 1 (x_0 drawn with q 0.5): E = 1.5, stop = 1.5/1.4 = 1.071; keep: (1.5 + 0.5*0.3)/1.9 = 0.868 -> cut.
    assert worth_verifying([0.5, 0.3], [0.5, 0.3], cost) == 1
    # with q_1 = 0.9: (1.5 + 0.45)/1.9 = 1.026 < 1.071 -> still cut; with x_0 at q 0.9 (E = 1.9, stop 1.357):
    # (1.9 + 0.81)/1.9 = 1.426 > 1.357 -> kept.
    assert worth_verifying([0.5, 0.9], [0.5, 0.9], cost) == 1
    assert worth_verifying([0.9, 0.9], [0.9, 0.9], cost) == 2
    # token 0 with max q 0.3: (1.3)/1.4 = 0.93 and (1 + 0.3 + 0.09)/1.9 = 0.73 -> cut before anything
    assert worth_verifying([0.3, 0.9], [0.3, 0.9], cost) == 0


def test_looking_ahead_keeps_a_long_proposal_where_the_cost_curve_falls() -> None:
    """The project's AMD machine: 2 and 3 tokens cost more than 5 (docs/benchmarks.md)."""
    falling = VerifyCost((1.0, 3.0, 3.0, 3.0, 1.5))
    # a 2-token proposal is not worth its 3-step forward; a 4-token one is worth its 1.5-step forward
    assert worth_verifying([0.5, 0.5], [0.5, 0.5], falling) == 0
    assert worth_verifying([0.5] * 4, [0.5] * 4, falling) == 4


def test_beyond_the_measured_sizes_the_curve_keeps_its_last_slope() -> None:
    cost = VerifyCost((1.0, 1.2, 1.5))
    assert cost.of(3) == 1.5 and cost.of(5) == pytest.approx(2.1)
    assert VerifyCost((1.0, 1.3, 1.2)).of(6) == 1.2  # a falling end is extended flat, never downwards
    assert VerifyCost((1.0, 1.6)).of(4) == pytest.approx(2.8)  # two points: their slope
    assert VerifyCost((1.0,)).of(3) == 1.0  # one point: flat
    assert VerifyCost((1.0, 2.0), one_token_ms=5.0).to_dict() == {
        "relative": [1.0, 2.0],
        "source": "",
        "one_token_ms": 5.0,
    }


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    m=st.integers(1, 6),
    curve=st.lists(st.floats(1.0, 4.0), min_size=8, max_size=8),
)
def test_keeping_token_i_never_reads_x_i(data, m, curve) -> None:
    """Exactness: whether token i is kept depends on q_j(x_j) for j < i and on max q_i only; redrawing x_i and
    everything after it (any q_j(x_j) <= max q_j) never changes that decision."""
    cost = VerifyCost((1.0, *curve))
    probs = st.floats(0.0, 1.0)
    max_q = [data.draw(probs) for _ in range(m)]
    drawn = [data.draw(st.floats(0.0, a)) for a in max_q]
    i = data.draw(st.integers(0, m - 1))
    redrawn = drawn[:i] + [data.draw(st.floats(0.0, a)) for a in max_q[i:]]
    assert (worth_verifying(drawn, max_q, cost) > i) == (worth_verifying(redrawn, max_q, cost) > i)


def test_cut_proposal_keeps_tokens_logits_and_probs_aligned() -> None:
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.1, 0.7], [0.1, 0.1, 0.8]]))
    probs = torch.softmax(logits, -1)
    proposal = Proposal(tokens=torch.tensor([0, 1, 2]), logits=logits, probs=probs)
    cut = cut_proposal(proposal, VerifyCost((1.0, 1.2, 1.9, 1.95)))
    # token 1 (drawn with q 0.1 after x_0 at 0.9): E = 1.9; keeping 1 and 2: (1.9 + 0.9*0.7 + 0.9*0.7*0.8)/... is
    # checked by the rule itself; here: the cut is a prefix, with its rows
    n = worth_verifying([0.9, 0.1, 0.8], [0.9, 0.7, 0.8], VerifyCost((1.0, 1.2, 1.9, 1.95)))
    assert cut.tokens.tolist() == [0, 1, 2][:n] and cut.logits.shape[0] == n and cut.probs.shape[0] == n
    assert cut_proposal(proposal, FLAT) is proposal


def sharp_copy(target: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A noisy copy whose output logits are scaled up (10x): a tiny random model's q is nearly flat, which the
    rule would cut every time; this one is confident at some steps and not at others."""
    draft = noisy_copy(target, 0.3, seed=seed)
    with torch.no_grad():
        draft.lm_head.weight.mul_(10.0)
    return draft


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_output_is_the_targets_with_cuts_happening(seed: int) -> None:
    target = tiny_llama(seed=seed)
    engine = SpeculativeEngine(target, draft_of(sharp_copy(target, seed=seed + 5), 96))
    engine.verify_cost = VerifyCost((1.0, 1.3, 1.6, 1.9, 2.2))
    lengths = []
    engine.add_listener(lambda record: lengths.append(int(record.draft_tokens.shape[0])))
    cfg = GenerationConfig(max_new_tokens=40, k=4)
    prompt = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(seed))
    expected, _ = run_ar(target, prompt, cfg)
    got, _ = run_spec(engine, prompt, cfg)
    assert got == expected
    assert len(set(lengths)) > 1 and max(lengths) <= 4  # proposals were cut at different lengths


def test_sampling_with_cuts_matches_the_target() -> None:
    """P(x1, x2 | prompt) under the target's processed sampling (6 tokens, 2000 samples). x1 comes from the
    prefill, x2 from one verify step whose single draft is verified only where the draft's max q exceeds 0.8
    (c(2) = 1.8; a sampled request's cuts read only its own steps, none yet): after x1 = 0 or 2 (max q 0.92, 0.89),
    about 6 requests in 10, and cut after the others (max q 0.62 to 0.72). Deeper cuts are covered by the property
    test above."""
    vocab = 6
    target = tiny_llama(seed=11, vocab=vocab, layers=1)  # one layer: the rule needs no depth; CI time does
    engine = SpeculativeEngine(target, draft_of(noisy_copy(target, 1.0, seed=12), vocab))
    engine.verify_cost = VerifyCost((1.0, 1.8))
    lengths = []
    engine.add_listener(lambda record: lengths.append(int(record.draft_tokens.shape[0])))
    prompt = torch.tensor([1, 4, 2])
    sampling = SamplingConfig(temperature=1.0, top_k=5)
    exact = exact_two_token_distribution(target, prompt, sampling)
    pairs = []
    for seed in range(2000):
        tokens, _ = run_spec(engine, prompt, GenerationConfig(max_new_tokens=3, k=2, sampling=sampling, seed=seed))
        pairs.append(tokens[0] * vocab + tokens[1])
    assert 100 < lengths.count(0) < 1900, lengths.count(0)  # cut at some steps, verified at others
    assert chi2_p_value(torch.tensor(pairs), exact) > PASS_P_VALUE


def test_the_measured_curve_is_relative_to_one_token_and_cached(tmp_path) -> None:
    target = tiny_llama(seed=0)
    curve = measure_verify_cost(target)
    assert len(curve.relative) == MEASURED_TOKENS and curve.relative[0] == 1.0
    assert all(c > 0 for c in curve.relative)
    first = cached_verify_cost(target, tmp_path)
    files = list((tmp_path / "verify-cost").glob("*.json"))
    assert len(files) == 1 and first.source == str(files[0])
    files[0].write_text('{"relative": [1.0, 7.0]}')  # what is cached is what is used: no second measurement
    cached = cached_verify_cost(target, tmp_path)
    assert cached.relative == (1.0, 7.0) and cached.one_token_ms == 0.0  # a file from before one_token_ms: unknown


def test_pipeline_modes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ONLINESPEC_MEASUREMENTS", str(tmp_path))
    target = tiny_llama(seed=0)
    loaded = LoadedModel(spec="tiny", model=target, tokenizer=None)
    pipe = Pipeline(loaded, draft_of(noisy_copy(target, 0.3), 96))
    assert pipe.engine.verify_cost is None  # the constructor verifies every drafted token
    assert pipe.use_verify_cost("auto").relative[0] == 1.0 and pipe.engine.verify_cost is not None
    assert len(list((tmp_path / "verify-cost").glob("*.json"))) == 1  # measured once, into $ONLINESPEC_MEASUREMENTS
    assert pipe.use_verify_cost("off") is None and pipe.engine.verify_cost is None
    with pytest.raises(UserError, match="unknown verify-cost mode 'fast'"):
        pipe.use_verify_cost("fast")
    assert Pipeline(loaded, None).use_verify_cost("auto") is None  # nothing to verify without a draft


def test_acceptance_rates_by_hand() -> None:
    rates = AcceptanceRates()
    assert rates.rate(0) == 1.0  # nothing observed: no correction
    for _ in range(4):
        rates.observe(verified=3, accepted=1)  # depth 0 accepted, depth 1 rejected, depth 2 never reached
    assert rates.rate(0) == 1.0  # 4 observations < MIN_WEIGHT: still no correction
    rates.observe(verified=3, accepted=0)
    w0 = sum(0.98**t for t in range(5))  # five reached steps, the newest weighted 1
    assert rates.rate(0) == pytest.approx(sum(0.98**t for t in range(1, 5)) / w0)  # all but the newest accepted
    assert rates.rate(1) == 1.0 and rates.reached[1] == pytest.approx(sum(0.98**t for t in range(1, 5)))
    assert rates.reached[2] == 0.0 and rates.rate(2) == 1.0 and len(rates.reached) == len(rates.accepted) == 3
    rates.load_dict({"accepted": [1.0], "reached": [4.0]})  # a weight of exactly MIN_WEIGHT counts
    assert rates.rate(0) == 0.25 and rates.to_dict() == {"accepted": [1.0], "reached": [4.0]}


def test_observed_rates_cap_an_overconfident_draft() -> None:
    """A lookup-like proposal (one-hot q: every token 'certain') is kept whole until the engine has seen that
    about half its tokens are rejected; then, under the same curve, it is cut."""
    cost = VerifyCost((1.0, 1.6, 1.9, 2.0, 2.1))
    proposal = Proposal(
        tokens=torch.tensor([1, 2, 3, 4]),
        logits=torch.full((4, 6), -1e9).scatter(1, torch.tensor([[1], [2], [3], [4]]), 0.0),
        probs=None,
    )
    rates = AcceptanceRates()
    assert cut_proposal(proposal, cost, rates) is proposal
    for step in range(20):
        rates.observe(verified=4, accepted=step % 2)  # depth 0 accepted half the time, depth 1 never
    assert cut_proposal(proposal, cost, rates).tokens.numel() == 0


def test_each_source_keeps_its_own_rates_and_a_pooled_memory_loads_as_one_source() -> None:
    rates = SourceAcceptance()
    for _ in range(10):
        rates.observe(verified=2, accepted=2, source="request")
        rates.observe(verified=2, accepted=0, source="head")
    assert rates.of("request").rate(0) == 1.0 and rates.of("head").rate(0) == 0.0
    assert rates.of("head").reached[1] == 0.0  # depth 1 never reached by the head
    assert rates.of("request").reached[0] == pytest.approx(sum(0.98**t for t in range(10)))  # own steps decay it
    assert rates.of().reached == []  # a source with no steps: no correction
    again = SourceAcceptance()
    again.load_dict(rates.to_dict())
    assert again.to_dict() == rates.to_dict() and set(again.sources) == {"request", "head", ""}
    again.load_dict({"accepted": [1.0], "reached": [4.0]})  # saved before sources existed
    assert set(again.sources) == {""} and again.of().rate(0) == 0.25


def test_the_engine_reads_and_feeds_the_rates_of_the_source_that_proposed() -> None:
    """With the hybrid draft whose index of earlier traffic holds the target's own answer, earlier traffic's
    proposals are accepted far more often than the untrained head's, and the engine keeps their rates apart (the
    cut of each reads its own)."""
    target = tiny_llama(seed=3)
    torch.manual_seed(0)
    head = EagleDraft(build_head("eagle", target).eval(), "eagle:fresh")
    draft = HybridDraft(LookupDraft(96, min_ngram=2, shared_min_ngram=4), head, head_min_confidence=0.0)
    engine = SpeculativeEngine(target, draft)
    engine.verify_cost = VerifyCost((1.0, 1.1, 1.2, 1.3, 1.4))
    prompt = torch.randint(0, 96, (10,), generator=torch.Generator().manual_seed(3))
    cfg = GenerationConfig(max_new_tokens=48, k=3)
    expected, _ = run_ar(target, prompt, cfg)
    draft.lookup.learn([torch.cat([prompt, torch.tensor(expected[:24])])])  # the answer's first half, seen before
    got, _ = run_spec(engine, prompt, cfg)
    assert got == expected
    shared, head_rates = engine.acceptance.of("shared"), engine.acceptance.of("head")
    assert {"shared", "head"} <= set(engine.acceptance.sources) and "" not in engine.acceptance.sources
    assert shared.reached[0] > 0 and head_rates.reached[0] > 0
    assert shared.accepted[0] / shared.reached[0] > 0.9 > 0.5 > head_rates.accepted[0] / head_rates.reached[0]


def test_a_depth_no_longer_verified_is_tried_again() -> None:
    rates = AcceptanceRates()
    for _ in range(100):
        rates.observe(verified=1, accepted=0)  # depth 0 always rejected
    assert rates.rate(0) < 0.01
    steps = 0
    while rates.rate(0) < 1.0:  # the rule now cuts depth 0 every step: nothing verified there
        rates.observe(verified=0, accepted=0)
        steps += 1
    assert 100 < steps < 200  # forgotten after ~ln(4 / 43) / ln(0.98) steps: verified again


def test_a_seed_reproduces_a_sample_whatever_requests_came_before() -> None:
    """The cut length decides which random draws each token gets, so a sampled request's cuts read only its own
    acceptance memory; the shared memory (greedy requests' cuts) still learns from it."""
    target = tiny_llama(seed=3)
    engine = SpeculativeEngine(target, draft_of(sharp_copy(target, seed=8), 96))
    engine.verify_cost = VerifyCost((1.0, 1.3, 1.6, 1.9, 2.2))
    prompt = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(3))
    sampled = GenerationConfig(max_new_tokens=40, k=4, sampling=SamplingConfig(temperature=0.8), seed=5)
    first, _ = run_spec(engine, prompt, sampled)
    for seed in range(3):  # other requests change the shared memory in between
        run_spec(engine, prompt, GenerationConfig(max_new_tokens=40, k=4, seed=seed))
        sampled_too = GenerationConfig(max_new_tokens=40, k=4, sampling=SamplingConfig(temperature=1.0), seed=seed)
        run_spec(engine, prompt[:4], sampled_too)
    again, _ = run_spec(engine, prompt, sampled)
    assert again == first
    assert engine.acceptance.of().reached and engine.acceptance.of().reached[0] > AcceptanceRates.MIN_WEIGHT


def test_a_token_whose_best_length_does_not_pay_is_cut_even_when_each_ratio_is_below_one() -> None:
    """Token 0 pays (max q 0.9 at c(2) = 1.5); its drawn q is only 0.1, so by token 1 the expected gain
    E = 1.1 per c(2) = 0.73 beats any longer length ((1.1 + 0.1 * 0.5) / 3 = 0.38): cut there."""
    assert worth_verifying([0.1, 0.5], [0.9, 0.5], VerifyCost((1.0, 1.5, 3.0))) == 1


def test_cut_proposal_takes_q_over_the_vocabulary_from_logits_and_leaves_an_empty_proposal_alone() -> None:
    """Flat rows (q = 1/6 per token) never pay at c(2) = 1.3, whatever the rows' levels."""
    logits = torch.stack([torch.zeros(6), torch.full((6,), -10.0)])  # [m=2, V=6]
    proposal = Proposal(tokens=torch.tensor([1, 0]), logits=logits, probs=None)
    assert cut_proposal(proposal, VerifyCost((1.0, 1.3, 1.6))).tokens.numel() == 0
    empty = Proposal(tokens=torch.zeros(0, dtype=torch.long), logits=torch.zeros(0, 6), probs=None)
    assert cut_proposal(empty, VerifyCost((1.0, 1.3))) is empty


class ScheduledTarget(torch.nn.Module):
    """A real tiny model behind a clock: each forward over n new tokens first sleeps n * delays[r] seconds, r being
    how many forwards over n tokens came before it (the last delay repeats); every call's batch, input length and
    cache length are recorded."""

    def __init__(self, model: torch.nn.Module, delays: tuple[float, ...]) -> None:
        super().__init__()
        self.model, self.config, self.delays = model, model.config, delays
        self.calls: list[tuple[int, int, int]] = []  # (batch, new tokens, cached positions before the call)

    def forward(self, input_ids: torch.Tensor, past_key_values, **kwargs):
        batch, n = input_ids.shape
        seen = sum(1 for call in self.calls if call[1] == n)
        self.calls.append((batch, n, past_key_values.get_seq_length()))
        time.sleep(n * self.delays[min(seen, len(self.delays) - 1)])
        return self.model(input_ids=input_ids, past_key_values=past_key_values, **kwargs)


class ClockedTarget(torch.nn.Module):
    """A real tiny model on a clock of its own: each forward over n new tokens moves `now` on by n * step seconds
    (nothing sleeps), so the times the measurement reads are exact."""

    def __init__(self, model: torch.nn.Module, step: float) -> None:
        super().__init__()
        self.model, self.config, self.step, self.now = model, model.config, step, 0.0

    def forward(self, input_ids: torch.Tensor, **kwargs):
        self.now += input_ids.shape[1] * self.step
        return self.model(input_ids=input_ids, **kwargs)


def test_the_one_token_time_is_the_fastest_one_token_forward_in_milliseconds(monkeypatch) -> None:
    target = ClockedTarget(tiny_llama(seed=0), step=0.0625)  # a power of two: every time below is exact
    monkeypatch.setattr(time, "perf_counter", lambda: target.now)
    curve = measure_verify_cost(target, sizes=3)
    assert curve.one_token_ms == 62.5 and curve.relative == (1.0, 2.0, 3.0)


def test_measuring_times_each_size_on_the_prefix_drops_the_warm_up_round_and_keeps_the_fastest(capsys) -> None:
    """Round 0 (no delay) is the warm-up and is not kept; round 1 (120 ms per token) is the fastest kept; rounds
    2 and 3 sleep 600 ms per token. So one token costs about 120 ms (plus the tiny model's own time, which a busy
    machine stretches) and two tokens about twice that."""
    target = ScheduledTarget(tiny_llama(seed=0), delays=(0.0, 0.12, 0.6))
    curve = measure_verify_cost(target, sizes=2)
    prefill, *timed = target.calls
    assert prefill == (1, PREFIX_TOKENS, 0)
    assert timed == [(1, n, PREFIX_TOKENS) for _ in range(REPEATS + 1) for n in (1, 2)]  # rolled back each time
    assert 120.0 <= curve.one_token_ms < 235.0, curve
    assert curve.relative[0] == 1.0 and 1.4 < curve.relative[1] <= 2.05, curve
    assert all(round(r, 4) == r for r in curve.relative)  # stored to 4 decimals
    assert capsys.readouterr().err == ""  # no progress bar unless asked for
    measure_verify_cost(tiny_llama(seed=0), sizes=2, progress="measuring")
    err = capsys.readouterr().err
    assert "measuring" in err and err.rsplit("\r", 2)[-2].strip() == ""  # shown, then cleared (leave=False)


def test_a_request_that_ends_with_a_plain_step_counts_its_target_time() -> None:
    """max_new_tokens = 2: the prefill gives the first token, then one token of budget is left, so no draft is
    verified (k = 0): a plain target step. Each target forward sleeps 50 ms per token."""
    model = tiny_llama(seed=0)
    engine = SpeculativeEngine(ScheduledTarget(model, delays=(0.05,)), draft_of(noisy_copy(model, 0.3), 96))
    _, stats = run_spec(engine, torch.tensor([3, 5, 7]), GenerationConfig(max_new_tokens=2, k=3))
    assert stats.target_forwards == 2 and stats.drafted == 0
    assert stats.target_s >= 0.2  # the 3-token prefill sleeps 150 ms, the plain step 50 ms


def test_each_verify_step_feeds_the_shared_memory_once_and_a_sampled_requests_own_memory_once() -> None:
    """Replaying the verify steps (as their feedback records report them) into fresh memories gives exactly the
    engine's: the shared one sees every request's steps, a sampled request's own memory sees only its steps."""
    target = tiny_llama(seed=4)
    engine = SpeculativeEngine(target, draft_of(sharp_copy(target, seed=9), 96))
    engine.verify_cost = VerifyCost((1.0, 1.3, 1.6, 1.9, 2.2))
    steps: list[tuple[int, int]] = []
    engine.add_listener(lambda record: steps.append((int(record.draft_tokens.shape[0]), record.num_accepted)))
    prompt = torch.randint(0, 96, (8,), generator=torch.Generator().manual_seed(4))
    run_spec(engine, prompt, GenerationConfig(max_new_tokens=30, k=4))
    greedy_steps = len(steps)
    run_spec(engine, prompt, GenerationConfig(max_new_tokens=30, k=4, sampling=SamplingConfig(temperature=0.8), seed=1))
    shared, own = AcceptanceRates(), AcceptanceRates()
    for i, (verified, accepted) in enumerate(steps):
        shared.observe(verified, accepted)
        if i >= greedy_steps:
            own.observe(verified, accepted)
    assert greedy_steps > 3 and len(steps) > greedy_steps + 3
    for got, expected in ((engine.acceptance.of(), shared), (engine.request_acceptance.of(), own)):
        assert got.reached == pytest.approx(expected.reached) and got.accepted == pytest.approx(expected.accepted)
