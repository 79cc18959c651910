"""`onlinespec generate --json`: the stats are the right arithmetic, not just present.

The draft is the target itself, so every verify step accepts all k drafts and the counts are known in advance:
20 new tokens with k = 3 take the prefill (1 token), four steps of 3 accepted + 1 (16 tokens), and a last step
that drafts only 2 (the budget has 3 left): 6 target forwards, 14 drafted, 14 accepted, tau = 20 / 6.
"""

from __future__ import annotations

import json

import pytest
from conftest import save_tiny_model_dir
from test_cli import onlinespec
from test_serve import WORDS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-stats") / "m"
    save_tiny_model_dir(path, WORDS)  # seed 0: its greedy answer to "the cat sat" runs past 20 tokens, no EOS
    return path


def test_generate_json_stats_are_consistent(model_dir) -> None:
    args = ("generate", "the cat sat", "--target", str(model_dir), "--max-new-tokens", "20", "--json", "--k", "3")
    # every drafted token verified, so the counts below are exact (with `auto` they depend on the measured curve)
    proc = onlinespec(*args, "--draft", str(model_dir), "--verify-cost", "off")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    s = out["stats"]
    assert out["finish_reason"] == "length" and len(out["token_ids"]) == s["new_tokens"] == 20
    assert s["prompt_tokens"] == 3
    assert (s["target_forwards"], s["drafted"], s["accepted"]) == (6, 14, 14)
    assert s["accept_hist"] == [0, 0, 1, 4]
    assert s["tau"] == round(20 / 6, 4) and s["alpha"] == 1.0

    # a draft that is sometimes rejected: every forward emits one target token plus the drafts it accepted;
    # the same identities hold when the cost rule cuts proposals (the default)
    for cost in ("off", "auto"):
        proc = onlinespec(*args, "--draft", "layerskip:2", "--verify-cost", cost)
        assert proc.returncode == 0, proc.stderr
        s = json.loads(proc.stdout)["stats"]
        check_identities(s)
        assert cost == "auto" or s["accepted"] < s["drafted"]  # all verified: some drafts were rejected


def check_identities(s: dict) -> None:
    assert s["new_tokens"] == 20 == s["target_forwards"] + s["accepted"]
    assert s["accepted"] == sum(n * count for n, count in enumerate(s["accept_hist"]))
    assert s["drafted"] <= 3 * sum(s["accept_hist"]) and s["accepted"] <= s["drafted"]
    assert s["tau"] == round(s["new_tokens"] / s["target_forwards"], 4)
    assert s["alpha"] == (round(s["accepted"] / s["drafted"], 4) if s["drafted"] else 0.0)
    assert s["tokens_per_s"] == pytest.approx(s["new_tokens"] / s["wall_s"], rel=1e-2)
