"""`onlinespec serve --draft hybrid:...`: with `--learner ogd` the default draft kind learns both ways while serving:
its head's weights change (the /draft digest) and its lookup index fills (/metrics), a repeated request is accepted
more with the same text, and a restarted server restores both. By default (learner `count`) only the index learns;
/metrics counts the verify steps each source drafted.
Same real-process setup as tests/test_serve.py."""

from __future__ import annotations

from pathlib import Path

from test_serve import Server, parse_prometheus
from test_serve_lookup import PROMPT, C, index_metrics, lookup_model  # noqa: F401  (lookup_model: a fixture)

from onlinespec.decoding.config import GenerationConfig
from onlinespec.pipeline import Pipeline


def test_the_hybrid_draft_learns_its_head_and_its_index_while_serving_and_survives_a_restart(
    lookup_model: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    flags = ("--draft", "hybrid:eagle:fresh", "--learner", "ogd", "--round-size", "1", "--schedule", "sync")
    flags += ("--draft-state", str(tmp_path / "state"))
    server = Server(lookup_model, tmp_path / "server.log", *flags)
    try:
        assert index_metrics(server)["entries"] == 0
        start = server.get("/draft").json()
        ar = Pipeline.load(str(lookup_model), draft="none")
        expected = ar.generate(PROMPT, GenerationConfig(max_new_tokens=24), chat=False, mode="ar").text
        first = server.post(C, {"prompt": PROMPT, "max_tokens": 24}).json()
        second = server.post(C, {"prompt": PROMPT, "max_tokens": 24}).json()
        for out in (first, second):
            assert out["choices"][0]["text"] == expected
        assert second["speculative"]["accepted"] > first["speculative"]["accepted"]  # drafted from the index
        draft = server.get("/draft").json()
        assert draft["learner"] == "ogd" and draft["round"] == 2 and draft["digest"] != start["digest"]
        assert draft["index"]["entries"] > 0 and index_metrics(server)["entries"] == draft["index"]["entries"]
        assert parse_prometheus(server.get("/metrics").text)["onlinespec_learner_rounds_total"][0][1] == 2
    finally:
        assert server.stop() in (0, -15)
    restarted = Server(lookup_model, tmp_path / "restarted.log", *flags)
    try:
        assert "restored draft state (round 2)" in restarted.log()
        again = restarted.get("/draft").json()
        assert again["digest"] == draft["digest"] and again["index"] == draft["index"]
    finally:
        restarted.stop()


def test_by_default_the_hybrid_draft_learns_its_index_alone_while_serving(
    lookup_model: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = Server(lookup_model, tmp_path / "server.log", "--draft", "hybrid:eagle:fresh", "--round-size", "1")
    try:
        start = server.get("/draft").json()
        first = server.post(C, {"prompt": PROMPT, "max_tokens": 24}).json()
        second = server.post(C, {"prompt": PROMPT, "max_tokens": 24}).json()
        assert first["choices"][0]["text"] == second["choices"][0]["text"]
        assert second["speculative"]["accepted"] > first["speculative"]["accepted"]  # drafted from the index
        draft = server.get("/draft").json()
        assert draft["learner"] == "count" and draft["round"] == 2
        assert draft["digest"] == start["digest"] and draft["index"]["entries"] > 0  # the head never changed
        metrics = parse_prometheus(server.get("/metrics").text)
        steps = {labels["source"]: n for labels, n in metrics["onlinespec_draft_source_steps_total"]}
        assert set(steps) == {"request", "shared", "head"} and steps["head"] > 0
        assert steps["request"] + steps["shared"] > 0
    finally:
        assert server.stop() in (0, -15)
