"""`onlinespec bench` arithmetic checked by hand: tau, alpha, ideal speedup, efficiency and the last-third ratio
from given round records, and the greedy-divergence report for a method whose outputs differ on purpose."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from onlinespec.bench.divergence import divergence_margins
from onlinespec.bench.results import first_divergence, ideal_speedup, render_report, summarise

K = 3


def record(method: str, new_tokens: int, forwards: int, drafted: int, accepted: int, **times: float) -> dict:
    """One round record with the fields `summarise` sums (times default to round numbers)."""
    return {
        "method": method,
        "prompts": 2,
        "new_tokens": new_tokens,
        "target_forwards": forwards,
        "drafted": drafted,
        "accepted": accepted,
        "decode_s": times.get("decode_s", 1.0),
        "draft_s": times.get("draft_s", 0.0),
        "target_s": times.get("target_s", 0.5),
        "update_s": times.get("update_s", 0.0),
        "tau": new_tokens / forwards,
    }


ROUNDS = [
    # ar: 40 tokens in 40 forwards over 4 s -> one AR step = 0.1 s, 10 tok/s
    *(record("ar", 20, 20, 0, 0, decode_s=2.0) for _ in range(2)),
    # static: three rounds (the last third is the last round)
    record("static", 20, 10, 30, 10, decode_s=1.0, draft_s=0.3),
    record("static", 20, 10, 30, 10, decode_s=1.0, draft_s=0.3),
    record("static", 20, 8, 24, 12, decode_s=1.0, draft_s=0.24),
    # ogd: six rounds (the last third is the last two), with update time
    *(record("ogd", 10, 5, 15, 5, decode_s=0.5, draft_s=0.15, update_s=0.1) for _ in range(4)),
    *(record("ogd", 12, 4, 12, 8, decode_s=0.5, draft_s=0.12, update_s=0.1) for _ in range(2)),
]


def outputs(static_second: list[int] | None = None) -> dict[str, list[list[int]]]:
    ref = [[1, 2, 3, 4], [5, 6, 7, 8]]
    return {"ar": ref, "static": [ref[0], static_second or ref[1]], "ogd": [list(r) for r in ref]}


def leviathan(alpha: float, k: int, c: float, u: float) -> float:
    """E = 1 + a + ... + a^k tokens per step, written as the sum (not the closed form the product uses)."""
    return sum(alpha**i for i in range(k + 1)) / (1 + c * k + u)


def test_ideal_speedup_is_leviathans_formula() -> None:
    assert ideal_speedup(0.5, 3, 0.0) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert ideal_speedup(0.8, 4, 0.05, 0.1) == pytest.approx(leviathan(0.8, 4, 0.05, 0.1))
    assert ideal_speedup(1.0, 3, 0.1) == pytest.approx(4 / 1.3)
    assert ideal_speedup(0.0, 5, 0.0) == pytest.approx(1.0)  # nothing accepted: one token per step


def test_summary_figures_match_a_hand_computation() -> None:
    methods = summarise({"c": 1}, ROUNDS, outputs(), K)["methods"]
    ar, static, ogd = methods["ar"], methods["static"], methods["ogd"]
    ar_step = 4.0 / 40  # ar's decode seconds per target forward
    assert ar["tau"] == pytest.approx(1.0)
    assert ar["tokens_per_s"] == pytest.approx(10.0)
    assert (ar["ideal_speedup"], ar["speedup"], ar["efficiency"]) == pytest.approx((1.0, 1.0, 1.0))

    # static: 60 tokens / 28 forwards; alpha 32 / 84; c = (0.84 s / 84 drafted) / 0.1 s; no update
    assert static["tau"] == pytest.approx(60 / 28)
    assert static["alpha"] == pytest.approx(32 / 84)
    assert static["cost_ratio"] == pytest.approx((0.84 / 84) / ar_step)
    assert static["update_per_step"] == pytest.approx(0.0)
    ideal = leviathan(32 / 84, K, 0.1, 0.0)
    assert static["ideal_speedup"] == pytest.approx(ideal)
    assert static["speedup"] == pytest.approx((60 / 3.0) / 10.0)
    assert static["efficiency"] == pytest.approx((60 / 3.0) / 10.0 / ideal)
    assert static["tau_last_third"] == pytest.approx(20 / 8)
    assert static["tau_last_third_vs_static"] == pytest.approx(1.0)

    # ogd: 64 tokens / 28 forwards; alpha 36 / 84; c = (0.84 / 84) / 0.1; u = (0.6 s / 28 forwards) / 0.1 s
    assert ogd["tau"] == pytest.approx(64 / 28)
    assert ogd["alpha"] == pytest.approx(36 / 84)
    u = (0.6 / 28) / ar_step
    assert ogd["update_per_step"] == pytest.approx(u)
    ideal = leviathan(36 / 84, K, 0.1, u)
    assert ogd["ideal_speedup"] == pytest.approx(ideal)
    speedup = (64 / (3.0 + 0.6)) / 10.0
    assert ogd["speedup"] == pytest.approx(speedup)
    assert ogd["speedup_excl_update"] == pytest.approx((64 / 3.0) / 10.0)
    assert ogd["efficiency"] == pytest.approx(speedup / ideal)
    assert ogd["tau_last_third"] == pytest.approx(24 / 8)
    assert ogd["tau_last_third_vs_static"] == pytest.approx((24 / 8) / (20 / 8))
    assert ogd["tau_per_round"] == pytest.approx([2.0] * 4 + [3.0] * 2)


def test_a_method_that_diverges_on_purpose_is_reported() -> None:
    results = summarise({}, ROUNDS, outputs(static_second=[5, 6, 9, 8]), K)
    static = results["methods"]["static"]
    assert static["greedy_mismatches"] == 1
    assert static["first_divergences"] == [{"prompt": 1, "token": 2}]
    assert results["methods"]["ogd"]["greedy_mismatches"] == 0
    assert results["greedy_mismatches"] == 1


def test_the_targets_margin_at_each_divergence_is_reported() -> None:
    """bench/divergence.py: top-1 minus top-2 logit of the target after the prompt and the reference's tokens before
    the divergence, attached to the divergence it explains; equal outputs and a reference that ended first get none."""
    model = tiny_llama(seed=0)
    prompts = [torch.tensor([3, 4, 5]), torch.tensor([7, 8])]
    texts = {"ar": [[10, 11, 12], [20, 21]], "x": [[10, 30, 12], [20, 21, 22]], "y": [[10, 11, 12], [20, 21]]}
    margins = divergence_margins(model, prompts, texts, "ar")
    with torch.no_grad():
        top = model(torch.tensor([[3, 4, 5, 10]])).logits[0, -1].topk(2).values
    assert margins == {"x": {"0": pytest.approx(float(top[0] - top[1]), abs=1e-5)}}
    assert margins["x"]["0"] >= 0
    results = summarise({}, ROUNDS, outputs(static_second=[5, 6, 9, 8]), K, {"static": {"1": 0.25}})
    assert results["methods"]["static"]["first_divergences"] == [{"prompt": 1, "token": 2, "margin": 0.25}]


@pytest.mark.parametrize(
    ("ours", "ref", "at"),
    [([1, 2, 3], [1, 2, 3], None), ([9, 2, 3], [1, 2, 3], 0), ([1, 2, 4], [1, 2, 3], 2), ([1, 2], [1, 2, 3], 2)],
)
def test_first_divergence(ours: list[int], ref: list[int], at: int | None) -> None:
    assert first_divergence(ours, ref) == at
    assert first_divergence(ref, ours) == at


def test_the_last_third_is_the_last_third_of_the_rounds() -> None:
    """Six rounds: the last third is the last two (rounds 5 and 6), whatever came before."""
    rounds = [
        *(record("ar", 20, 20, 0, 0) for _ in range(6)),
        *(record("static", 20, 10, 20, 10) for _ in range(6)),
        *(record("ogd", 20, 10, 20, 10) for _ in range(4)),
        record("ogd", 20, 8, 16, 12),  # round 5: tau 2.5
        record("ogd", 20, 5, 10, 15),  # round 6: tau 4
    ]
    ref = [[1, 2]]
    ogd = summarise({}, rounds, {"ar": ref, "static": ref, "ogd": ref}, K)["methods"]["ogd"]
    assert ogd["tau_last_third"] == pytest.approx(40 / 13)
    assert ogd["tau_last_third_vs_static"] == pytest.approx((40 / 13) / 2.0)


def test_a_method_that_never_drafted_has_no_draft_cost_and_an_ideal_of_one() -> None:
    """A drafting method whose draft proposed nothing (e.g. prompt lookup with no match) decodes like `ar`: its
    ideal speedup is 1, its cost and update ratios 0, however long its (empty) drafting and its update took."""
    rounds = [
        *(record("ar", 20, 20, 0, 0, decode_s=2.0) for _ in range(2)),
        *(record("static", 20, 20, 0, 0, decode_s=2.5, draft_s=0.2, update_s=0.3) for _ in range(2)),
    ]
    ref = [[1, 2]]
    static = summarise({}, rounds, {"ar": ref, "static": ref}, K)["methods"]["static"]
    assert (static["cost_ratio"], static["update_per_step"], static["ideal_speedup"]) == (0.0, 0.0, 1.0)
    assert static["speedup"] == pytest.approx((40 / 5.6) / (40 / 4.0))
    assert static["efficiency"] == pytest.approx(static["speedup"])


def test_ratios_over_a_zero_are_reported_as_zero() -> None:
    """An `ar` that decoded nothing (every prompt's budget 0 tokens, say) gives speedups of 0, not a crash or inf;
    with no `static` method there is no last-third ratio."""
    rounds = [record("ar", 0, 1, 0, 0, decode_s=0.0), record("ogd", 4, 2, 4, 2, decode_s=0.5, draft_s=0.1)]
    methods = summarise({}, rounds, {"ar": [[]], "ogd": [[]]}, K)["methods"]
    ogd = methods["ogd"]
    assert (ogd["speedup"], ogd["speedup_excl_update"], ogd["cost_ratio"]) == (0.0, 0.0, 0.0)
    assert ogd["tau_last_third_vs_static"] is None


def test_at_most_five_divergences_are_listed_but_all_are_counted() -> None:
    n = 7
    ref = [[i, i + 1] for i in range(n)]
    rounds = [record("ar", 2 * n, 2 * n, 0, 0), record("static", 2 * n, n, n, n)]
    results = summarise({}, rounds, {"ar": ref, "static": [[i, 99] for i in range(n)]}, K)
    static = results["methods"]["static"]
    assert static["greedy_mismatches"] == n == results["greedy_mismatches"]
    assert static["first_divergences"] == [{"prompt": i, "token": 1} for i in range(5)]


def test_per_domain_figures_match_a_hand_computation() -> None:
    """A shifted stream: each method's rounds grouped by domain label (a round spanning two domains is its own
    group "a+b"), with tau, tokens/s over decode plus update seconds, and the speedup against ar's rounds of the
    same label; the report prints one column per label, in stream order."""

    def rec(method: str, domain: str, tokens: int, forwards: int, decode_s: float, update_s: float = 0.0) -> dict:
        return {**record(method, tokens, forwards, 0, 0, decode_s=decode_s, update_s=update_s), "domain": domain}

    rounds = [
        rec("ar", "math", 20, 20, 2.0),
        rec("ar", "math+code", 20, 20, 4.0),
        rec("ar", "code", 20, 20, 2.0),
        rec("ar", "code", 20, 20, 2.0),
        rec("count", "math", 20, 10, 1.0, update_s=0.25),
        rec("count", "math+code", 20, 8, 2.0),
        rec("count", "code", 20, 5, 1.0),
        rec("count", "code", 30, 10, 1.0, update_s=1.0),
    ]
    ref = [[1, 2]]
    methods = summarise({}, rounds, {"ar": ref, "count": ref}, K)["methods"]
    assert list(methods["count"]["domains"]) == ["math", "math+code", "code"]
    math, both, code = (methods["count"]["domains"][label] for label in ("math", "math+code", "code"))
    assert (math["tau"], math["tokens_per_s_incl_update"], math["speedup"]) == pytest.approx((2.0, 16.0, 1.6))
    assert (both["tau"], both["speedup"]) == pytest.approx((2.5, 10.0 / 5.0))
    assert (code["new_tokens"], code["tau"]) == (50, pytest.approx(50 / 15))
    assert code["speedup"] == pytest.approx((50 / 3.0) / (40 / 4.0))
    results = {
        "config": {
            "stream": "shifted:math,code",
            "prompts": 8,
            "wall_s": 60.0,
            "environment": {"onlinespec": "0", "torch": "0", "transformers": "0", "cpus": 2, "torch_threads": 2},
            "settings": {
                "draft": "auto",
                "preset": "quick",
                "target": "t",
                "dtype": "float32",
                "k": K,
                "max_new_tokens": 8,
                "round_size": 2,
                "seed": 0,
                "online": {"learner_cfg": {"lr": None}, "schedule": "sync"},
            },
        },
        "methods": methods,
    }
    lines = render_report(results).splitlines()
    assert "| method | math | math+code | code |" in lines
    assert "| count | 2.00 / 1.60x | 2.50 / 2.00x | 3.33 / 1.67x |" in lines


def test_a_stream_of_one_domain_has_no_per_domain_table() -> None:
    from test_bench_report import config  # (it imports this module: imported here, not at the top)

    assert "per domain" not in render_report(summarise(config(), ROUNDS, outputs(), K))
