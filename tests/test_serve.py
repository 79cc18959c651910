"""`onlinespec serve`, run as users run it: a real server process on a free loopback port, real HTTP clients
(httpx, and the official `openai` client), a tiny random Llama with a word-level tokenizer.

The served model has no end-of-sequence token, so every answer runs to max_tokens: lengths and timings are
predictable. Servers: `static` (no learning: exact equality with the engine, bad input, API key, queue, metrics),
`learning` (OGD with a draft-state dir: greedy equality while learning, opt-out, disconnects, SIGTERM), a restart
of it, and a pair for SIGKILL (whose restarted server also checks the request timeout).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from conftest import save_tiny_model_dir
from safetensors.torch import load_file

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.online.state_store import load_state
from onlinespec.pipeline import Pipeline

WORDS = "the cat sat on a mat dog ran to big red house and blue user assistant : fish ate".split()  # noqa: SIM905
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
DRAFT, K = "layerskip:2", 3
PROMPTS = ["the cat sat", "a big red house", "dog ran to the mat", "blue fish ate"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny Llama whose tokenizer has a chat template and no EOS token (answers run to max_tokens)."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("served") / "model"
    save_tiny_model_dir(path, WORDS)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.eos_token = None
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m onlinespec serve` in a subprocess; its stderr goes to a log file."""

    def __init__(self, model_dir: Path, log: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        # --verify-cost off: responses are compared with a library engine that verifies every drafted token (with
        # `auto` the cuts follow a measured, timing-dependent curve); a test can pass --verify-cost auto in flags
        args = ["--target", str(model_dir), "--draft", DRAFT, "--k", str(K), "--port", str(self.port)]
        args += ["--verify-cost", "off", *flags]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "onlinespec", "serve", *args], stdout=fh, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}:\n{self.log()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def post(self, path: str, body, headers: dict | None = None, **kwargs) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.url}{path}", content=content, headers=headers or {}, timeout=60, **kwargs)

    def get(self, path: str, headers: dict | None = None) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=headers or {}, timeout=60)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def stream(server: Server, path: str, body: dict, headers: dict | None = None) -> tuple[str, list[dict]]:
    """POST with stream=true; returns (the text of all chunks joined, the parsed events). Ends at [DONE]."""
    with httpx.stream("POST", f"{server.url}{path}", json={**body, "stream": True}, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        return read_events(r)


def read_events(response: httpx.Response) -> tuple[str, list[dict]]:
    assert response.headers["content-type"].startswith("text/event-stream")
    texts, events = [], []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        if line == "data: [DONE]":
            return "".join(texts), events
        event = json.loads(line[len("data: ") :])
        events.append(event)
        for choice in event.get("choices", []):
            texts.append(choice.get("text") or choice.get("delta", {}).get("content") or "")
    raise AssertionError(f"stream ended without [DONE]: {events[-1:]}")


@pytest.fixture(scope="module")
def engine(model_dir) -> Pipeline:
    return Pipeline.load(str(model_dir), draft=DRAFT, verify_cost="off")  # as the test servers (Server above)


@pytest.fixture(scope="module")
def static(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("static") / "server.log"
    server = Server(
        model_dir,
        log,
        "--learner=static",
        "--api-key",
        KEY,
        "--max-queue",
        "2",
        "--max-body-bytes",
        "4096",
        "--max-tokens-limit",
        "1000",
    )
    yield server
    server.stop()


# --- equality with the engine ------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_streaming_and_plain_responses_equal_the_engine(static: Server, engine: Pipeline, temperature: float) -> None:
    for i, prompt in enumerate(PROMPTS[:2]):
        settings = {"max_tokens": 12, "temperature": temperature, "seed": i}
        cfg = GenerationConfig(
            max_new_tokens=12, k=K, seed=i, sampling=SamplingConfig(temperature=temperature, top_p=1.0)
        )
        for kind, path, body, chat in (
            ("completion", "/v1/completions", {"prompt": prompt}, False),
            ("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}]}, True),
        ):
            expected = engine.generate(prompt, cfg, chat=chat)
            plain = static.post(path, {**body, **settings}, AUTH)
            assert plain.status_code == 200, plain.text
            out = plain.json()
            choice = out["choices"][0]
            text = choice["text"] if kind == "completion" else choice["message"]["content"]
            assert text == expected.text
            assert choice["finish_reason"] == "length"
            assert out["usage"]["completion_tokens"] == len(expected.token_ids) == 12
            spec = out["speculative"]
            assert spec["new_tokens"] == 12 and spec["target_forwards"] == expected.stats.target_forwards
            assert spec["accepted"] == expected.stats.accepted and spec["learned"] is False
            streamed, events = stream(static, path, {**body, **settings}, AUTH)
            assert streamed == expected.text
            assert events[-1]["choices"][0]["finish_reason"] == "length"
            assert events[-1]["speculative"]["tau"] == spec["tau"]


def test_openai_client_streaming_and_not(static: Server, engine: Pipeline) -> None:
    client = openai.OpenAI(base_url=f"{static.url}/v1", api_key=KEY, max_retries=0)
    [model] = client.models.list().data
    expected = engine.generate(PROMPTS[2], GenerationConfig(max_new_tokens=10, k=K), chat=True)
    messages = [{"role": "user", "content": PROMPTS[2]}]
    reply = client.chat.completions.create(model=model.id, messages=messages, max_tokens=10, temperature=0)
    assert reply.choices[0].message.content == expected.text
    assert reply.usage.completion_tokens == 10
    assert reply.model_extra["speculative"]["target_forwards"] == expected.stats.target_forwards
    chunks = list(
        client.chat.completions.create(
            model=model.id, messages=messages, max_tokens=10, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert chunks[-1].usage.completion_tokens == 10
    completion = client.completions.create(model=model.id, prompt=PROMPTS[2], max_tokens=10)
    assert completion.choices[0].text == engine.generate(PROMPTS[2], GenerationConfig(10, K), chat=False).text
    with pytest.raises(openai.BadRequestError, match="only n = 1"):
        client.completions.create(model=model.id, prompt="the cat", n=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{static.url}/v1", api_key="wrong", max_retries=0).models.list()


# --- bad input and abuse -----------------------------------------------------------------------------------------

C, CHAT = "/v1/completions", "/v1/chat/completions"
BAD_INPUTS = [
    # (path, body, status, param, message)
    (C, b'{"prompt": "the cat", ', 400, None, "not valid JSON"),
    (C, b"[1, 2]", 400, None, "must be a JSON object"),
    (C, {"prompt": "the cat", "max_tokens": "ten"}, 400, "max_tokens", "'max_tokens' must be an integer"),
    (C, {"prompt": "the cat", "temperature": "hot"}, 400, "temperature", "'temperature' must be a number"),
    (C, {"prompt": "the cat", "temperature": 3}, 400, "temperature", "between 0 and 2"),
    (C, {"prompt": "the cat", "top_p": 0}, 400, "top_p", "(0, 1]"),
    (C, {"prompt": "the cat", "stream": "yes"}, 400, "stream", "must be true or false"),
    (C, {"prompt": "the cat", "stop": 5}, 400, "stop", "'stop' must be"),
    (C, {"prompt": "the cat", "max_tokens": -3}, 400, "max_tokens", "'max_tokens' must be >= 1, got -3"),
    (C, {"prompt": "the cat", "max_tokens": 10**9}, 400, "max_tokens", "must be <= 1000"),
    (C, {"prompt": "cat " * 600}, 400, "prompt", "the prompt has 600 tokens but the model's context is 512"),
    (C, {"prompt": "cat " * 500, "max_tokens": 50}, 400, "max_tokens", "lower max_tokens to at most 12"),
    (C, {"prompt": "the cat", "n": 2}, 400, "n", "only n = 1 is supported"),
    (C, {"prompt": "the cat", "logprobs": 3}, 400, "logprobs", "'logprobs' is not supported"),
    (C, {"prompt": "the cat", "colour": "red"}, 400, "colour", "unrecognized request argument supplied: colour"),
    (C, {"prompt": ["the cat", "a dog"]}, 400, "prompt", "batches of prompts are not supported"),
    (C, {"prompt": "   "}, 400, "prompt", "'prompt' is empty"),
    (C, {"prompt": [5, 9999]}, 400, "prompt", "token id 9999 is outside the vocabulary"),
    (C, {"max_tokens": 3}, 400, "prompt", "'prompt' is required"),
    (C, {"prompt": "the cat", "model": "gpt-4"}, 404, "model", "model 'gpt-4' does not exist"),
    (C, {"prompt": "cat " * 1200}, 413, None, "larger than 4096 bytes"),
    (CHAT, {"messages": "hi"}, 400, "messages", "'messages' must be a non-empty list"),
    (
        CHAT,
        {"messages": [{"role": "tool", "content": "x"}]},
        400,
        "messages[0].role",
        "'messages[0].role' must be one of",
    ),
    (CHAT, {"messages": [{"role": "user", "content": 7}]}, 400, "messages[0].content", "must be a string"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400, "tools", ""),
]


@pytest.mark.parametrize(("path", "body", "status", "param", "message"), BAD_INPUTS)
def test_bad_input_gets_its_status_and_an_openai_error_naming_the_field(
    static: Server, path: str, body, status: int, param: str | None, message: str
) -> None:
    r = static.post(path, body, AUTH)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_bad_opt_out_header(static: Server) -> None:
    r = static.post(C, {"prompt": "the cat", "max_tokens": 2}, {**AUTH, "X-OnlineSpec-No-Learn": "perhaps"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-OnlineSpec-No-Learn"


def test_api_key_is_required_everywhere_but_health(static: Server) -> None:
    body = {"prompt": "the cat", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        for r in (static.get("/v1/models", headers), static.get("/metrics", headers), static.get("/draft", headers)):
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
        for path in (C, CHAT):
            assert static.post(path, body, headers).status_code == 401
    assert static.get("/health").status_code == 200
    assert static.get("/v1/models", AUTH).json()["data"][0]["id"] == str(static_model_name(static))
    assert static.post(C, body, AUTH).status_code == 200


def static_model_name(server: Server) -> str:
    return server.get("/health").json()["model"]


def test_a_full_queue_answers_503_with_retry_after(static: Server) -> None:
    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=static.url, headers=AUTH, timeout=60) as client:
            body = {"prompt": "the cat", "max_tokens": 400}
            return await asyncio.gather(*(client.post(C, json=body) for _ in range(8)))

    responses = asyncio.run(flood())
    codes = sorted(r.status_code for r in responses)
    busy = [r for r in responses if r.status_code == 503]
    assert set(codes) == {200, 503} and len(busy) >= 4, codes  # 1 decoding + 2 queued at most can be accepted
    assert all(int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "queue_full" for r in busy)
    assert all(r.json()["usage"]["completion_tokens"] == 400 for r in responses if r.status_code == 200)
    assert static.post(C, {"prompt": "the cat", "max_tokens": 2}, AUTH).status_code == 200  # and it recovers


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict, float]]]:
    """A strict reader of the text exposition format: every sample belongs to a family declared by # TYPE."""
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict, float]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in types
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        match = METRIC_LINE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, _, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} has no # TYPE"
        parsed = {k: v for k, v, _ in LABEL.findall(labels or "")}
        samples.setdefault(name, []).append((parsed, float(value)))
    for name, kind in types.items():
        if kind == "histogram":
            counts = [v for labels, v in samples[f"{name}_bucket"]]
            assert counts == sorted(counts), f"{name} buckets are not cumulative"
            assert samples[f"{name}_bucket"][-1][0]["le"] == "+Inf"
            assert counts[-1] == samples[f"{name}_count"][0][1]
    return samples


def test_metrics_parse_as_prometheus_text(static: Server) -> None:
    static.post(C, {"prompt": "the cat", "max_tokens": 5}, AUTH)
    r = static.get("/metrics", AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(r.text)
    for name in (
        "onlinespec_requests_total",
        "onlinespec_completion_tokens_total",
        "onlinespec_tau_count",
        "onlinespec_alpha_bucket",
        "onlinespec_tokens_per_second_sum",
        "onlinespec_time_to_first_token_seconds_count",
        "onlinespec_learner_updates_total",
        "onlinespec_learner_update_seconds_total",
        "onlinespec_http_responses_total",
    ):
        assert name in samples, name
    assert samples["onlinespec_tau_count"][0][1] >= 1
    assert samples["onlinespec_completion_tokens_total"][0][1] >= 5
    codes = {labels["code"] for labels, _ in samples["onlinespec_http_responses_total"]}
    assert {"200", "401"} <= codes


# --- learning with traffic ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learning(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    flags = ("--learner", "ogd", "--lr", "0.5", "--round-size", "2", "--draft-state", str(root / "state"))
    server = Server(model_dir, root / "server.log", *flags)
    server.state_dir, server.flags = root / "state", flags
    yield server
    server.stop()


def test_greedy_output_equals_autoregressive_while_the_draft_learns(learning: Server, model_dir: Path) -> None:
    ar = Pipeline.load(str(model_dir), draft="none")
    first = learning.get("/draft").json()
    for prompt in PROMPTS * 2:
        expected = ar.generate(prompt, GenerationConfig(max_new_tokens=16), chat=False, mode="ar")
        out = learning.post(C, {"prompt": prompt, "max_tokens": 16}).json()
        assert out["choices"][0]["text"] == expected.text
        assert out["speculative"]["learned"] is True
    after = learning.get("/draft").json()
    assert after["round"] == first["round"] + 4 and after["digest"] != first["digest"]  # it did learn
    samples = parse_prometheus(learning.get("/metrics").text)
    assert samples["onlinespec_learner_updates_total"][0][1] >= 3  # overlap: the last update may still run
    assert {labels["name"] for labels, _ in samples["onlinespec_learner_telemetry"]} >= {"loss", "grad_norm"}


def test_private_requests_are_served_but_not_learned_from(learning: Server) -> None:
    before = learning.get("/draft").json()
    for prompt in PROMPTS:
        r = learning.post(C, {"prompt": prompt, "max_tokens": 8}, {"X-OnlineSpec-No-Learn": "1"})
        assert r.status_code == 200 and r.json()["speculative"]["learned"] is False
    assert learning.get("/draft").json() == before  # no round ended, no weight changed
    learning.post(C, {"prompt": PROMPTS[0], "max_tokens": 8}, {"X-OnlineSpec-No-Learn": "false"})
    learning.post(C, {"prompt": PROMPTS[1], "max_tokens": 8})
    assert learning.get("/draft").json()["round"] == before["round"] + 1


def test_client_disconnect_mid_stream_frees_the_decoder(learning: Server, model_dir: Path) -> None:
    with httpx.stream(
        "POST", f"{learning.url}{C}", json={"prompt": "the cat", "max_tokens": 480, "stream": True}, timeout=60
    ) as r:
        next(r.iter_lines())  # the first chunk: decoding has started; now hang up
    deadline = time.monotonic() + 30
    while learning.get("/health").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = parse_prometheus(learning.get("/metrics").text)
    finished = {labels["finish_reason"]: v for labels, v in samples["onlinespec_requests_total"]}
    assert finished.get("cancelled") == 1, finished  # aborted, not decoded to the end
    assert samples["onlinespec_learner_errors_total"][0][1] == 0
    ar = Pipeline.load(str(model_dir), draft="none")  # the learner is consistent: it keeps serving exact output
    for prompt in PROMPTS[:2]:
        out = learning.post(C, {"prompt": prompt, "max_tokens": 12}).json()
        assert out["choices"][0]["text"] == ar.generate(prompt, GenerationConfig(12), chat=False, mode="ar").text


def test_sigterm_during_traffic_saves_the_state_and_a_new_process_restores_it(
    learning: Server, model_dir: Path, tmp_path: Path
) -> None:
    results: list[str] = []

    def client(i: int) -> None:
        """Each request must end complete, or be refused cleanly: never a truncated answer."""
        body = {"prompt": PROMPTS[i % 4], "max_tokens": 40, "stream": bool(i % 2)}
        answered = False  # response headers arrived: from here on, an error means a truncated answer
        try:
            with httpx.stream("POST", f"{learning.url}{C}", json=body, timeout=60) as r:
                answered = True
                if r.status_code != 200:
                    results.append(f"{r.status_code} {json.loads(r.read())['error']['code']}")
                elif body["stream"]:
                    results.append("complete" if read_events(r)[1][-1]["speculative"]["new_tokens"] == 40 else "short")
                else:
                    results.append("complete" if json.loads(r.read())["usage"]["completion_tokens"] == 40 else "short")
        except httpx.ConnectError:
            results.append("refused")  # arrived after the listener closed
        except httpx.RemoteProtocolError as exc:  # accepted but closed unread by the shutdown: nothing half-done
            results.append("refused" if "without sending a response" in str(exc) else f"broken: {exc!r}")
        except httpx.ReadError as exc:  # a reset: clean only if it came before any response (queued, never read)
            results.append(f"broken: {exc!r}" if answered else "refused")
        except (httpx.TransportError, AssertionError) as exc:
            results.append(f"broken: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
        time.sleep(0.03)
    # SIGTERM while a request is being decoded (on a loaded machine the first may not have arrived yet)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if learning.get("/health").json()["in_flight"]:
            break
        time.sleep(0.01)
    learning.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=60)
    assert learning.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert len(results) == 6 and set(results) <= {"complete", "refused", "503 shutting_down"}, results
    assert "complete" in results
    log = learning.log()
    saved = re.search(r"saved draft state \(round (\d+)\)", log)
    assert saved, log
    tensors, _, info = load_state(learning.state_dir)
    assert info["round"] == int(saved.group(1))

    from onlinespec.serve.worker import tensors_digest

    restored = Server(model_dir, tmp_path / "restored.log", *learning.flags)
    try:
        assert f"restored draft state (round {info['round']})" in restored.log()
        draft = restored.get("/draft").json()
        assert draft["round"] == info["round"] and draft["digest"] == tensors_digest(tensors)
    finally:
        restored.stop()


# --- nothing lost: SIGKILL, corrupt snapshots, timeouts -------------------------------------------------------------


@pytest.fixture(scope="module")
def after_sigkill(model_dir: Path, tmp_path_factory):
    """SIGKILL a learning server amid traffic with a checkpoint after every request, damage the newest snapshot as a
    half-written file would be, and restart on the same state (with a 50 ms request timeout, for the next test).
    Yields (restarted server, newest snapshot's name and digest, the fallback's name, round and digest)."""
    from onlinespec.serve.worker import tensors_digest

    root = tmp_path_factory.mktemp("sigkill")
    state = root / "state"
    flags = ("--learner", "ogd", "--lr", "0.5", "--round-size", "1", "--schedule", "sync", "--draft-state", str(state))
    server = Server(model_dir, root / "a.log", *flags)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                server.post(C, {"prompt": "the cat", "max_tokens": 6})
            except httpx.TransportError:
                return

    thread = threading.Thread(target=traffic)
    thread.start()
    while len(list(state.glob("state-*"))) < 3:
        time.sleep(0.02)
    server.proc.kill()  # SIGKILL at an arbitrary moment, likely mid-request or mid-checkpoint
    server.proc.wait()
    stop.set()
    thread.join()
    tensors, _, info = load_state(state)  # the newest complete snapshot verifies
    assert info["round"] >= 2  # LATEST may still name the one before a snapshot renamed into place
    snapshots = {int(p.name.split("-")[1]): p for p in state.glob("state-*")}
    newest, fallback = snapshots[info["round"]], max(r for r in snapshots if r != info["round"])
    newest_digest = tensors_digest(tensors)  # before the file under these (memory-mapped) tensors is damaged
    (newest / "draft.safetensors").write_bytes((newest / "draft.safetensors").read_bytes()[:100])  # half-written
    good = tensors_digest(load_file(snapshots[fallback] / "draft.safetensors"))
    restarted = Server(model_dir, root / "b.log", *flags, "--request-timeout", "0.05")
    yield restarted, (newest.name, newest_digest), (snapshots[fallback].name, fallback, good)
    restarted.stop()


def test_sigkill_during_checkpoints_then_a_corrupt_snapshot_falls_back(after_sigkill) -> None:
    restarted, (newest, newest_digest), (fallback, fallback_round, fallback_digest) = after_sigkill
    assert f"state {newest} is corrupt or incomplete; using {fallback}" in restarted.log()
    draft = restarted.get("/draft").json()
    assert draft["round"] == fallback_round and draft["digest"] == fallback_digest != newest_digest


def test_request_timeout_is_504_or_an_error_event(after_sigkill) -> None:
    server = after_sigkill[0]  # started with --request-timeout 0.05
    r = server.post(C, {"prompt": "the cat", "max_tokens": 500})  # >= 125 target forwards: never in 50 ms
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    assert "--request-timeout" in r.json()["error"]["message"]
    body = {"prompt": "the cat", "max_tokens": 500, "stream": True}
    with httpx.stream("POST", f"{server.url}{C}", json=body) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == "timeout"
    assert server.get("/health").json()["in_flight"] == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "{busy}"], "cannot listen on 127.0.0.1:{busy}"),
    ],
)
def test_bad_serve_flags_are_one_clear_line_before_loading_anything(flags: list[str], message: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = [f.replace("{busy}", port) for f in flags]
        proc = subprocess.run(
            [sys.executable, "-m", "onlinespec", "serve", "--target", "./no/such/model", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2
    assert message.replace("{busy}", port) in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
