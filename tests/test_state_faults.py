"""State directories under faults: a snapshot that cannot be written is counted and the last good one kept, the
final one's failure is one clear line; every command refuses a directory another process owns, or one it cannot
write, before it loads a model."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import httpx
import pytest
from conftest import damaged_draft, run_spec, save_tiny_model_dir, shifted_stream, tiny_llama
from test_cli import onlinespec
from test_dir_lock import hold_in_other_process
from test_serve import Server

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.errors import UserError
from onlinespec.online.session import OnlineConfig, OnlineLearning
from onlinespec.online.state_store import load_state

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "big", "red", "house"]


def block(state: Path) -> Path:
    """Make `state` unwritable for snapshots: move it aside and put a file where it was."""
    aside = state.with_name(state.name + "-aside")
    state.rename(aside)
    state.write_text("in the way")
    return aside


def test_a_failed_snapshot_is_counted_the_last_good_one_kept_and_close_says_so(tmp_path: Path) -> None:
    target = tiny_llama(seed=0)
    engine = SpeculativeEngine(target, damaged_draft(target))
    state = tmp_path / "state"
    online = OnlineLearning(
        engine, OnlineConfig(learner="ogd", round_requests=1, schedule="sync", state_dir=str(state))
    )
    prompts = shifted_stream(per_domain=2)[:3]
    _, stats = run_spec(engine, prompts[0], GenerationConfig(max_new_tokens=12, k=3))
    online.after_request(stats)  # round 1: saved
    aside = block(state)
    for prompt in prompts[1:]:  # rounds 2 and 3: their snapshots fail, decoding goes on
        _, stats = run_spec(engine, prompt, GenerationConfig(max_new_tokens=12, k=3))
        assert online.after_request(stats) is not None
    status = online.status()
    assert (status.round, status.checkpoints, status.checkpoint_failures, status.last_good_round) == (3, 1, 2, 1)
    assert "FileExistsError" in status.last_checkpoint_error
    with pytest.raises(UserError, match=r"could not save the draft state to .*the last good snapshot \(round 1\)"):
        online.close()
    state.unlink()
    aside.rename(state)
    assert load_state(state)[2]["round"] == 1  # the last good state is what a restart restores


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "model"
    save_tiny_model_dir(path, WORDS)
    return path


@pytest.mark.parametrize(
    ("command", "what", "draft"),
    [
        (["generate", "the cat", "--learner", "ogd", "--draft-state"], "draft state", "layerskip:2"),
        (["serve", "--learner", "ogd", "--port", "1", "--draft-state"], "draft state", "layerskip:2"),
        (["warmup", "--minutes", "1", "--out"], "warm-up output folder", "eagle"),  # warmup trains heads only
        (["bench", "--preset", "quick", "--out"], "benchmark run", "layerskip:2"),
    ],
)
def test_every_command_refuses_a_directory_another_process_owns(
    tmp_path: Path, command, what, draft, model_dir
) -> None:
    held = tmp_path / "held"
    holder = hold_in_other_process(held)
    try:
        proc = onlinespec(*command, str(held), "--target", str(model_dir), "--draft", draft)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert f"the {what} '{held}' is in use by pid {holder.pid}" in lines[-1]
    assert "Traceback" not in proc.stderr and len(lines) <= 2  # bench first says what it is about to run


@pytest.mark.parametrize("command", [["generate", "the cat", "--learner", "ogd"], ["serve", "--learner", "ogd"]])
def test_an_unwritable_draft_state_is_refused_at_start(tmp_path: Path, command, model_dir) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = onlinespec(*command, "--draft-state", str(blocker / "state"), "--target", str(model_dir))
    assert proc.returncode == 2 and "cannot write the draft state" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_server_counts_checkpoint_failures_and_shuts_down_in_one_line(tmp_path: Path, model_dir) -> None:
    state = tmp_path / "state"
    args = ["--learner", "ogd", "--round-size", "1", "--draft-state", str(state), "--no-save-in-background"]
    server = Server(model_dir, tmp_path / "server.log", *args)
    try:
        body = {"prompt": "the cat", "max_tokens": 6}
        assert server.post("/v1/completions", body).status_code == 200  # round 1: written
        aside = block(state)
        for _ in range(2):  # rounds 2 and 3: not written, still served
            assert server.post("/v1/completions", body).status_code == 200
        health = httpx.get(f"{server.url}/health", timeout=10).json()["checkpoints"]
        assert (health["written"], health["failed"], health["last_good_round"]) == (1, 2, 1)
        metrics = server.get("/metrics").text
        assert "onlinespec_checkpoints_total 1" in metrics and "onlinespec_checkpoint_failures_total 2" in metrics
    finally:
        assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    log = server.log()
    assert "Traceback" not in log
    assert sum("could not save the draft state" in line for line in log.splitlines()) == 1
    about_state = [line for line in log.splitlines() if "draft state" in line]
    assert all(line.startswith("onlinespec serve: ") for line in about_state), about_state  # the learner's too
    shutdown = log[log.index("Shutting down") :].splitlines()
    assert sum("draft state" in line for line in shutdown) == 1, shutdown  # the final save's failure: one line
    state.unlink()
    shutil.move(aside, state)
    assert load_state(state)[2]["round"] == 1
