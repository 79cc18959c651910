"""benchmarks/stream_thirds.py: a bench run's rounds summarised per third, checked by hand on a made-up run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stream_thirds.py"
spec = importlib.util.spec_from_file_location("stream_thirds", SCRIPT)
stream_thirds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stream_thirds)


def row(method: str, round_no: int, tokens: int, forwards: int, loss: float | None = None, head=None) -> dict:
    out = {"method": method, "round": round_no, "new_tokens": tokens, "target_forwards": forwards}
    if loss is not None:
        out["loss"] = loss
    if head is not None:
        steps, scored, first_right, matched = head
        out["sources"] = {"head": {"steps": steps, "scored": scored, "first_right": first_right, "matched": matched}}
    return out


def test_thirds_keep_the_reports_last_third() -> None:
    assert stream_thirds.thirds(list(range(1, 8))) == [[1, 2], [3, 4, 5], [6, 7]]
    assert stream_thirds.thirds([1]) == [[1], [], [1]]


def test_summary_by_hand(tmp_path, capsys) -> None:
    rows = [row("frozen", t, 10, 10, loss=2.0) for t in range(1, 7)]
    rows += [row("learner", t, 10 + t, 10, loss=1.0 + t / 10, head=(4, 4, t % 2, t)) for t in range(1, 7)]
    summary = stream_thirds.summarise(rows, {t: 2.0 for t in range(1, 7)})
    learner = summary["learner"]["thirds"]
    assert [p["tau"] for p in learner] == pytest.approx([23 / 20, 27 / 20, 31 / 20])
    # third 1: rounds 1-2, one first token right of 8 scored, 3 tokens matched; round 1 has no loss ratio
    assert learner[0]["sources"]["head"] == pytest.approx((8, 1 / 8, 3 / 8))
    assert learner[0]["loss_ratio"] == pytest.approx(1.2 / 2.0)
    assert learner[2]["loss_ratio"] == pytest.approx((1.5 / 2 + 1.6 / 2) / 2)
    assert summary["learner"]["loss_ratio"] == pytest.approx(sum(1 + t / 10 for t in range(2, 7)) / 5 / 2.0)
    frozen = summary["frozen"]
    assert frozen["loss_ratio"] == pytest.approx(1.0) and frozen["thirds"][1]["sources"] == {}

    run = tmp_path / "run"
    run.mkdir()
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stream_thirds.main([str(run), "--reference", "frozen"]) == 0
    printed = capsys.readouterr().out
    assert "learner: tau by thirds 1.150 / 1.350 / 1.550" in printed
    assert "loss vs reference: whole stream 0.700, by thirds 0.600 / 0.675 / 0.775" in printed
    with pytest.raises(SystemExit, match="no round losses"):
        stream_thirds.main([str(run), "--reference", "nobody"])
    with pytest.raises(SystemExit, match="does not exist"):
        stream_thirds.main([str(tmp_path / "missing")])
