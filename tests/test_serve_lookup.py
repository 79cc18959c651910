"""`onlinespec serve --draft lookup`: the index learns from traffic (not from private requests), /metrics and /draft
report its memory, and a restarted server restores it. Same real-process setup as tests/test_serve.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_tiny_model_dir
from test_serve import CHAT_TEMPLATE, WORDS, Server, free_port, parse_prometheus

from onlinespec.decoding.config import GenerationConfig
from onlinespec.pipeline import Pipeline

C = "/v1/completions"
PROMPT = "the cat sat on a mat the cat sat"
PRIVATE = {"X-OnlineSpec-No-Learn": "1"}


@pytest.fixture(scope="module")
def lookup_model(tmp_path_factory) -> Path:
    """A tiny Llama whose tokenizer has a chat template and no EOS token (answers run to max_tokens)."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("lookup") / "model"
    save_tiny_model_dir(path, WORDS)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.eos_token = None
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def index_metrics(server: Server) -> dict[str, float]:
    samples = parse_prometheus(server.get("/metrics").text)
    return {key: samples[f"onlinespec_draft_index_{key}"][0][1] for key in ("entries", "max_entries", "bytes")}


def test_the_lookup_index_learns_from_traffic_reports_its_memory_and_survives_a_restart(
    lookup_model: Path, tmp_path: Path
) -> None:
    # serve's default learner for a lookup draft is count; a round per request, a snapshot per round
    flags = ("--draft", "lookup:4:5000", "--round-size", "1", "--draft-state", str(tmp_path / "state"))
    server = Server(lookup_model, tmp_path / "server.log", *flags)
    try:
        assert index_metrics(server) == {"entries": 0.0, "max_entries": 5000.0, "bytes": 0.0}
        ar = Pipeline.load(str(lookup_model), draft="none")
        expected = ar.generate(PROMPT, GenerationConfig(max_new_tokens=24), chat=False, mode="ar").text
        first = server.post(C, {"prompt": PROMPT, "max_tokens": 24}).json()
        learned = index_metrics(server)
        assert learned["entries"] > 0 and learned["bytes"] > 0
        private = server.post(C, {"prompt": "big red house and blue fish ate", "max_tokens": 24}, PRIVATE).json()
        assert private["speculative"]["learned"] is False and index_metrics(server) == learned  # nothing added
        second = server.post(C, {"prompt": PROMPT, "max_tokens": 24}).json()
        for out in (first, second):
            assert out["choices"][0]["text"] == expected
        assert second["speculative"]["accepted"] > first["speculative"]["accepted"]  # it learned the first answer
        draft = server.get("/draft").json()
        assert draft["learner"] == "count" and draft["round"] == 2 and draft["index"]["entries"] > 0
        samples = parse_prometheus(server.get("/metrics").text)
        assert samples["onlinespec_learner_rounds_total"][0][0] == {"learner": "count"}
        before = index_metrics(server)
    finally:
        assert server.stop() in (0, -15)
    restarted = Server(lookup_model, tmp_path / "restarted.log", *flags)
    try:
        assert "restored draft state (round 2)" in restarted.log()
        assert index_metrics(restarted) == before
    finally:
        restarted.stop()
    # another layout: refused in one line before serving
    args = ["--target", str(lookup_model), "--draft", "lookup:3", "--draft-state", str(tmp_path / "state")]
    refused = subprocess.run(
        [sys.executable, "-m", "onlinespec", "serve", *args, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "cannot use the draft state" in refused.stderr and "longest n-gram 4, this draft has 3" in refused.stderr
