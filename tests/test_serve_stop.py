"""Stop strings through the real server: streamed text equals non-streamed text when one verify step accepts
several tokens that complete the stop string at once, with the right finish_reason and usage counts.

The draft is the target itself (an independent draft LM with the same weights), so every verify step accepts all
k drafted tokens: the steps are multi-token by construction.
"""

from __future__ import annotations

import pytest
from test_serve import Server, model_dir, stream  # noqa: F401  (model_dir is a fixture)

from onlinespec.decoding.config import GenerationConfig
from onlinespec.pipeline import Pipeline

K = 3
PROMPT = "the cat sat"


@pytest.fixture(scope="module")
def self_drafted(model_dir, tmp_path_factory):  # noqa: F811
    log = tmp_path_factory.mktemp("self-drafted") / "server.log"
    server = Server(model_dir, log, "--draft", str(model_dir), "--k", str(K), "--learner", "static")
    yield server
    server.stop()


def complete(server: Server, **body) -> dict:
    response = server.post("/v1/completions", {"prompt": PROMPT, "temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response.json()


def stop_strings(text: str) -> list[str]:
    """Stop strings that occur in `text` and end in the middle of a multi-token step: a whole word, part of a
    word, a single character, and a string spanning a word boundary."""
    words = text.split()
    assert len(words) >= 8, text
    third, fifth = words[2], words[4]
    return [third, fifth[1:], fifth[-1], f"{words[5]} {words[6]}"[1:]]


def test_streamed_equals_non_streamed_for_stops_completed_inside_a_step(self_drafted: Server, model_dir) -> None:  # noqa: F811
    unstopped = complete(self_drafted, max_tokens=16)
    text = unstopped["choices"][0]["text"]
    assert unstopped["choices"][0]["finish_reason"] == "length"
    hist = unstopped["speculative"]["accept_hist"]
    # every step accepts all k drafts (the last one may draft fewer, to fit max_tokens)
    assert len(hist) == K + 1 and hist[K] >= 3 and sum(hist[:2]) == 0, f"steps were not multi-token: {hist}"
    for stop in stop_strings(text):
        plain = complete(self_drafted, max_tokens=16, stop=stop)
        expected = text[: text.find(stop)]
        assert plain["choices"][0]["text"] == expected, stop
        assert plain["choices"][0]["finish_reason"] == "stop", stop
        streamed, events = stream(
            self_drafted, "/v1/completions", {"prompt": PROMPT, "temperature": 0, "max_tokens": 16, "stop": stop}
        )
        assert streamed == expected, f"stop {stop!r}: streamed {streamed!r}, not streamed {expected!r}"
        assert events[-1]["choices"][0]["finish_reason"] == "stop", stop


def test_usage_counts_match_the_engine(self_drafted: Server, model_dir) -> None:  # noqa: F811
    pipe = Pipeline.load(str(model_dir), draft=str(model_dir))
    prompt_ids = pipe.tokenizer(PROMPT, add_special_tokens=True)["input_ids"]
    unstopped = complete(self_drafted, max_tokens=16)
    stop = unstopped["choices"][0]["text"].split()[3]
    expected = pipe.generate(PROMPT, GenerationConfig(max_new_tokens=16, k=K, stop=(stop,)), chat=False)
    body = complete(self_drafted, max_tokens=16, stop=stop)
    assert body["choices"][0]["text"] == expected.text
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(prompt_ids)
    assert usage["completion_tokens"] == len(expected.token_ids) < 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
