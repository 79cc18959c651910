"""ServerMetrics without a server: every family under its exact name, and one registry per server (no global state)."""

from onlinespec.serve.metrics import CONTENT_TYPE, HELP, ServerMetrics

STATS = {"prompt_tokens": 3, "new_tokens": 5, "wall_s": 1.5, "drafted": 4, "accepted": 2, "tau": 1.7, "alpha": 0.5}


def test_each_server_has_its_own_registry() -> None:
    first, second = ServerMetrics("none"), ServerMetrics("none")
    first.count_http("/health", 200)
    assert 'onlinespec_http_responses_total{code="200",path="/health"} 1.0' in first.render(0, 0, 0).decode()
    assert "onlinespec_http_responses_total{" not in second.render(0, 0, 0).decode()


def test_every_family_renders_under_its_exact_name() -> None:
    metrics = ServerMetrics("hedge")
    metrics.observe_checkpoints(1, 2)
    metrics.count_learner_error()
    metrics.observe_round({"round": 1, "loss": 0.5, "weights": [0.25, 0.75]})
    metrics.observe_request({**STATS, "tokens_per_s": 5 / 1.5}, "stop", True, queue_s=0.5, ttft_s=0.6)
    counts = {"steps": 7, "scored": 9, "first_right": 4, "held_back": 2, "first_token_rate": 0.44}
    metrics.observe_draft_sources({"shared": counts, "head": {**counts, "held_back": 0}, "held_back": 2})
    text = metrics.render(queue_depth=3, in_flight=1, draft_round=4).decode()
    for line in (
        "onlinespec_checkpoints_total 1",
        "onlinespec_checkpoint_failures_total 2",
        "onlinespec_learner_errors_total 1",
        'onlinespec_learner_rounds_total{learner="hedge"} 1',
        'onlinespec_learner_telemetry{name="loss"} 0.5',
        'onlinespec_learner_hedge_weight{expert="1"} 0.75',
        'onlinespec_requests_total{finish_reason="stop",learned="true"} 1',
        'onlinespec_request_seconds_bucket{le="2.5"} 1',
        'onlinespec_alpha_bucket{le="0.5"} 1',
        "onlinespec_queue_depth 3",
        "onlinespec_in_flight 1",
        "onlinespec_learner_round 4",
        'onlinespec_draft_source_steps_total{source="shared"} 7',
        'onlinespec_draft_source_first_right_total{source="head"} 4',
        'onlinespec_draft_source_held_back_total{source="shared"} 2',
        'onlinespec_draft_source_scored_total{source="head"} 9',
    ):
        assert line in text
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert declared == {f"onlinespec_{name}" for name in HELP}
    assert (metrics.latency.sum, metrics.latency.count) == (2.0, 1)  # what Worker.retry_after_s reads
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
