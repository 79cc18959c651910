"""Crash-safe, checksummed persistence of the draft and learner state."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from onlinespec.errors import UserError
from onlinespec.online.state_store import load_state, save_state


def test_round_trip_of_nested_learner_state(tmp_path: Path) -> None:
    learner = {
        "learner": "ensemble",
        "round": 3,
        "experts": [[torch.ones(2, 2)], [torch.zeros(3)]],
        "cumulative_losses": [0.5, 1.5],
        "w0": [torch.arange(4.0)],
    }
    save_state(tmp_path, {"layer.weight": torch.full((2, 3), 7.0)}, learner, {"round": 3, "draft": "d"})
    draft, restored, info = load_state(tmp_path)
    assert torch.equal(draft["layer.weight"], torch.full((2, 3), 7.0))
    assert restored["cumulative_losses"] == [0.5, 1.5] and restored["round"] == 3
    assert torch.equal(restored["experts"][1][0], torch.zeros(3))
    assert info == {"round": 3, "draft": "d"}


def test_corrupt_latest_snapshot_falls_back_to_the_previous_one(tmp_path: Path, capsys) -> None:
    for r in (1, 2):
        save_state(tmp_path, {"w": torch.full((4,), float(r))}, {"round": r}, {"round": r})
    latest = tmp_path / (tmp_path / "LATEST").read_text()
    data = bytearray((latest / "draft.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (latest / "draft.safetensors").write_bytes(bytes(data))
    draft, _, info = load_state(tmp_path)
    assert info["round"] == 1 and torch.equal(draft["w"], torch.ones(4))
    assert "corrupt" in capsys.readouterr().err


def test_every_snapshot_corrupt_is_a_clear_error(tmp_path: Path) -> None:
    save_state(tmp_path, {"w": torch.ones(2)}, {}, {"round": 1})
    (tmp_path / "state-000001" / "state.json").write_text("{}")
    with pytest.raises(UserError, match="failed its checksum"):
        load_state(tmp_path)


def test_no_state_yet_is_none(tmp_path: Path) -> None:
    assert load_state(tmp_path / "fresh") is None


WRITER = textwrap.dedent(
    """
    import sys, torch
    from onlinespec.online.state_store import save_state
    r = 0
    while True:
        r += 1
        big = torch.full((2_000_000,), float(r))  # 8 MB, so a kill often lands mid-write
        save_state(sys.argv[1], {"w": big}, {"round": r, "hint": [big[:10]]}, {"round": r})
        print(r, flush=True)
    """
)


def test_killing_the_writer_at_any_moment_leaves_a_readable_consistent_state(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    state = tmp_path / "state"
    for delay in (0.0, 0.05, 0.1, 0.2, 0.3):
        proc = subprocess.Popen([sys.executable, str(script), str(state)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip()  # one snapshot is complete; the next one is being written
        time.sleep(delay)
        proc.kill()  # SIGKILL: no cleanup of any kind, usually in the middle of a snapshot
        proc.wait()
        draft, learner, info = load_state(state)
        r = info["round"]
        assert learner["round"] == r
        assert torch.equal(draft["w"], torch.full((2_000_000,), float(r)))
        assert torch.equal(learner["hint"][0], torch.full((10,), float(r)))
