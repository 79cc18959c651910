"""No client input gets a 5xx: property-based fuzz of the request schema (in process, many bodies) and the hostile
classes seen in review sent to a real server (huge and tiny numbers, lone surrogates, deep nesting, ...).

A body is either refused with a 400 in the OpenAI error shape that renders as UTF-8, or accepted, in which case it
becomes a generation config whose sampling gives finite probabilities.
"""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve import Server, model_dir  # noqa: F401  (model_dir is a fixture)

from onlinespec.decoding.sampling import probs_from_logits
from onlinespec.serve.app import generation_config
from onlinespec.serve.errors import ApiError
from onlinespec.serve.schemas import CompletionRequest, parse_json, parse_request

FIELDS = ["model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options", "n"]
FIELDS += ["user", "prompt", "messages", "max_completion_tokens", "logprobs", "echo", "best_of", "\ud800", "x"]
HOSTILE_NUMBERS = [2**64, 2**64 - 1, -(2**63) - 1, -(2**63), 10**300, -(10**300), 1e-38, 1e-320, 5e-324, 1e-46]
HOSTILE_NUMBERS += [0, 1, -1, 0.5, 2.0, 1e308, float("inf"), float("nan")]
STRINGS = st.sampled_from(["", " ", "the cat", "\ud800", "a\udfffb", "user", "assistant", "\x00", "é"]) | st.text()
ATOMS = st.none() | st.booleans() | st.sampled_from(HOSTILE_NUMBERS) | st.integers() | st.floats() | STRINGS
JSON = st.recursive(
    ATOMS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4), max_leaves=12
)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "bot"]) | JSON, "content": JSON})
VALUES = {"messages": st.lists(MESSAGE, max_size=3) | JSON, "prompt": STRINGS | JSON}
BODIES = st.dictionaries(st.sampled_from(FIELDS) | STRINGS, JSON, max_size=6).flatmap(
    lambda d: st.fixed_dictionaries({k: VALUES.get(k, st.just(v)) for k, v in d.items()})
)


def check_error(error: ApiError) -> None:
    assert error.status == 400, error.message
    body = error.response().body  # renders: no surrogate survives into the UTF-8 body
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, kind=st.sampled_from(["completion", "chat"]))
def test_any_body_is_a_400_or_a_valid_request(body: dict, kind: str) -> None:
    raw = json.dumps(body).encode()  # ensure_ascii: surrogates travel as \\ud800 escapes, as a client sends them
    try:
        req = parse_request(parse_json(raw), kind, max_tokens_limit=64)
        cfg = generation_config(req, 4, 2)
    except ApiError as error:
        check_error(error)
        return
    assert isinstance(req, CompletionRequest)
    cfg.generator()  # the seed fits the sampler's generator
    probs = probs_from_logits(torch.randn(3, 50) * 30, cfg.sampling)
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(-1), torch.ones(3))


RAW_CASES = [
    b'{"prompt": "the cat", "seed": 18446744073709551616}',
    b'{"prompt": "the cat", "seed": -9223372036854775809}',
    b'{"prompt": "the cat", "temperature": 1e-38, "max_tokens": 2}',
    b'{"prompt": "the cat", "temperature": 1e-320, "max_tokens": 2}',
    b'{"prompt": "the cat", "temperature": 0.5, "top_p": 1e-46, "max_tokens": 2}',
    b'{"prompt": "the cat", "max_tokens": 1' + b"0" * 400 + b"}",
    b'{"prompt": "the cat", "temperature": 0.' + b"0" * 400 + b"1}",
    b'{"prompt": "the cat", "seed": ' + b"9" * 5000 + b"}",
    b'{"prompt": "the cat \\ud800"}',
    b'{"prompt": "the cat", "model": "\\ud800"}',
    b'{"prompt": "the cat", "\\ud800": 1}',
    b'{"messages": [{"role": "user", "content": "hi", "\\udc00x": 1}]}',
    b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):  # noqa: F811
    log = tmp_path_factory.mktemp("fuzzed") / "server.log"
    served = Server(model_dir, log, "--learner", "static", "--default-max-tokens", "2", "--max-tokens-limit", "4")
    yield served
    served.stop()


def post(server: Server, path: str, raw: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    return httpx.post(f"{server.url}{path}", content=raw, headers=headers, timeout=60)


def check_response(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_hostile_bodies_get_no_5xx_and_no_traceback(server: Server, path: str) -> None:
    for raw in RAW_CASES:
        check_response(post(server, path, raw))
    assert "Traceback" not in server.log()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]))
def test_fuzzed_bodies_get_no_5xx(server: Server, body: dict, path: str) -> None:
    response = post(server, path, json.dumps(body).encode())
    check_response(response)
    assert "Traceback" not in server.log()


def test_an_error_echoes_at_most_a_bounded_part_of_the_value() -> None:
    from onlinespec.serve.schemas import SHOWN_CHARS

    with pytest.raises(ApiError) as caught:
        parse_request({"prompt": "the cat", "max_tokens": "y" * 100_000}, "completion", max_tokens_limit=64)
    assert caught.value.param == "max_tokens" and "must be an integer" in caught.value.message
    assert len(caught.value.message) < SHOWN_CHARS + 60 and caught.value.message.endswith("yyy...")
