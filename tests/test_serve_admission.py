"""What the server admits: HEAD health probes, JSON bodies only (by declared type), and an operator's per-request
token budget (--max-request-tokens) refused with a 400 before anything is queued."""

from __future__ import annotations

import httpx
import pytest
from test_serve import Server, model_dir  # noqa: F401  (model_dir is a fixture)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):  # noqa: F811
    log = tmp_path_factory.mktemp("admission") / "server.log"
    served = Server(model_dir, log, "--learner", "static", "--max-request-tokens", "12")
    yield served
    served.stop()


def test_head_health_answers_200_without_a_body(server: Server) -> None:
    response = httpx.head(f"{server.url}/health", timeout=10)
    assert response.status_code == 200 and response.content == b""


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_declared_as_something_else_than_json_is_refused(server: Server, media: str) -> None:
    response = server.post("/v1/completions", {"prompt": "the cat", "max_tokens": 2}, {"Content-Type": media})
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["error"]["message"]


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "application/json; charset=utf-8"}])
def test_json_or_undeclared_bodies_are_served(server: Server, headers: dict) -> None:
    response = server.post("/v1/completions", {"prompt": "the cat", "max_tokens": 2}, headers)
    assert response.status_code == 200, response.text


def test_a_request_over_the_per_request_budget_is_refused(server: Server) -> None:
    body = {"prompt": "the cat sat on the mat", "max_tokens": 10}  # 6 prompt tokens + 10 > 12
    response = server.post("/v1/completions", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "max_tokens" and "per-request budget of 12 tokens" in error["message"]
    assert server.post("/v1/completions", {**body, "max_tokens": 6}).status_code == 200
