"""`finish_reason`, stop strings that occur and `usage` through a real server whose model has a real EOS token that
the greedy answer reaches; and private requests (X-OnlineSpec-No-Learn) that leave the learned draft untouched.

The model: the tiny Llama of `save_tiny_model_dir` with seed 5, whose greedy answer to PROMPT is 11 words and then
"<eos>" (found by trying seeds 0-5 on a few prompts; the fixture asserts it still holds).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import save_tiny_model_dir
from test_serve import WORDS, Server, stream

from onlinespec.decoding.config import GenerationConfig
from onlinespec.pipeline import Pipeline

SEED, PROMPT, DRAFT, K = 5, "dog ran to the mat", "layerskip:2", 3
MAX = 32  # well past the EOS
C = "/v1/completions"


@pytest.fixture(scope="module")
def eos_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eos") / "model"
    save_tiny_model_dir(path, WORDS, seed=SEED)
    return path


@pytest.fixture(scope="module")
def pipe(eos_dir) -> Pipeline:
    return Pipeline.load(str(eos_dir), draft=DRAFT)


@pytest.fixture(scope="module")
def answer(pipe):
    """The engine's greedy answer to PROMPT: it must end in EOS, several words in."""
    result = pipe.generate(PROMPT, GenerationConfig(max_new_tokens=MAX, k=K), chat=False)
    assert result.finish_reason == "eos" and len(result.token_ids) >= 8, (result.finish_reason, result.text)
    return result


@pytest.fixture(scope="module")
def server(eos_dir, tmp_path_factory):
    s = Server(eos_dir, tmp_path_factory.mktemp("eos-server") / "server.log", "--learner", "static")
    yield s
    s.stop()


def prompt_tokens(pipe: Pipeline) -> int:
    return len(pipe.tokenizer(PROMPT, add_special_tokens=True)["input_ids"])


def complete(server: Server, **body) -> dict:
    r = server.post(C, {"prompt": PROMPT, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def streamed(server: Server, **body) -> tuple[str, str, dict]:
    """(text, finish_reason, usage) of a streamed request that asks for the usage chunk."""
    text, events = stream(
        server, C, {"prompt": PROMPT, "temperature": 0, "stream_options": {"include_usage": True}, **body}
    )
    reasons = [c["finish_reason"] for e in events for c in e.get("choices", []) if c.get("finish_reason")]
    assert len(reasons) == 1, events
    assert events[-1]["choices"] == [] and "usage" in events[-1], events[-1]
    return text, reasons[0], events[-1]["usage"]


def assert_usage(usage: dict, prompt: int, completion: int) -> None:
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, completion)
    assert usage["total_tokens"] == prompt + completion


def test_eos_finishes_with_stop(server: Server, pipe: Pipeline, answer) -> None:
    body = complete(server, max_tokens=MAX)
    assert body["choices"][0]["text"] == answer.text
    assert body["choices"][0]["finish_reason"] == "stop"
    assert_usage(body["usage"], prompt_tokens(pipe), len(answer.token_ids))
    text, reason, usage = streamed(server, max_tokens=MAX)
    assert (text, reason) == (answer.text, "stop")
    assert_usage(usage, prompt_tokens(pipe), len(answer.token_ids))


def test_max_tokens_before_the_eos_finishes_with_length(server: Server, pipe: Pipeline, answer) -> None:
    n = len(answer.token_ids) - 2
    expected = pipe.generate(PROMPT, GenerationConfig(max_new_tokens=n, k=K), chat=False)
    assert expected.finish_reason == "length"
    body = complete(server, max_tokens=n)
    assert (body["choices"][0]["text"], body["choices"][0]["finish_reason"]) == (expected.text, "length")
    assert_usage(body["usage"], prompt_tokens(pipe), n)
    text, reason, usage = streamed(server, max_tokens=n)
    assert (text, reason) == (expected.text, "length")
    assert_usage(usage, prompt_tokens(pipe), n)


def test_stop_strings_that_occur_cut_the_text_streamed_and_not(server: Server, pipe: Pipeline, answer) -> None:
    text = answer.text
    words = text.split()
    # one stop string across each word boundary: its first character ends one token, the rest starts the next
    stops = [f"{a[-1]} {b[0]}" for a, b in zip(words, words[1:], strict=False)]
    stops += [words[3], words[-1][1:]]  # a whole word, and the tail of the last word before the EOS
    for stop in stops:
        expected = pipe.generate(PROMPT, GenerationConfig(max_new_tokens=MAX, k=K, stop=(stop,)), chat=False)
        assert expected.finish_reason == "stop" and expected.text == text[: text.find(stop)], stop
        body = complete(server, max_tokens=MAX, stop=[stop])
        assert body["choices"][0]["text"] == expected.text, stop
        assert body["choices"][0]["finish_reason"] == "stop", stop
        assert_usage(body["usage"], prompt_tokens(pipe), len(expected.token_ids))
        got, reason, usage = streamed(server, max_tokens=MAX, stop=stop)
        assert (got, reason) == (expected.text, "stop"), f"stop {stop!r}: streamed {got!r}"
        assert_usage(usage, prompt_tokens(pipe), len(expected.token_ids))


def test_a_stop_string_that_does_not_occur_leaves_the_eos_finish(server: Server, answer) -> None:
    body = complete(server, max_tokens=MAX, stop=["zebra", "cat cat cat cat"])
    assert (body["choices"][0]["text"], body["choices"][0]["finish_reason"]) == (answer.text, "stop")


# --- private requests ---------------------------------------------------------------------------------------------

LEARN = ("--learner", "ogd", "--lr", "0.5", "--round-size", "1", "--schedule", "sync")
PRIVATE = {"X-OnlineSpec-No-Learn": "1"}
OTHERS = ["the cat sat", "a big red house", "blue fish ate", "dog ran to the mat on a mat"]


def test_private_requests_leave_no_trace_in_what_the_draft_learns(eos_dir, tmp_path_factory) -> None:
    """Two identical learning servers; one first serves private requests. After the same normal request on both
    (one round each, updated synchronously), both drafts must be the same: nothing of the private requests was
    learned, not even buffered for the next round."""
    root = tmp_path_factory.mktemp("private")
    with_private, plain = Server(eos_dir, root / "a.log", *LEARN), Server(eos_dir, root / "b.log", *LEARN)
    try:
        start = with_private.get("/draft").json()
        assert start == plain.get("/draft").json()
        for prompt in OTHERS:
            r = with_private.post(C, {"prompt": prompt, "max_tokens": 16}, PRIVATE)
            assert r.status_code == 200 and r.json()["speculative"]["learned"] is False
        assert with_private.get("/draft").json() == start  # no round ended
        for server in (with_private, plain):
            assert server.post(C, {"prompt": PROMPT, "max_tokens": 16}).json()["speculative"]["learned"] is True
        learned = plain.get("/draft").json()
        assert learned["round"] == 1 and learned["digest"] != start["digest"]  # the normal request was learned
        assert with_private.get("/draft").json() == learned
    finally:
        with_private.stop()
        plain.stop()
