"""Server metrics in the Prometheus text exposition format (version 0.0.4), written by hand: a handful of
counters, gauges and histograms, guarded by one lock (the decoding thread writes, the event loop reads)."""

from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict

PREFIX = "onlinespec"
TAU_BUCKETS = (1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
ALPHA_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKENS_PER_S_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


# Last round's learner figures with a gauge of their own (all scalars are also in learner_telemetry{name=...}).
ROUND_GAUGES = {
    "loss": "Last round's loss at the draft it decoded with (w_t), on that round's feedback.",
    "loss_after": "Last round's loss after its update (w_{t+1}), on the same feedback.",
    "oov_rate": "Fraction of last round's positions whose target top-1 token is outside the draft vocabulary.",
    "update_norm_ratio": "||w_{t+1} - w_t|| / ||w_t|| of last round's update.",
}


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # non-cumulative; made cumulative when rendered
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.buckets):
            self.counts[i] += 1
        self.sum += value
        self.count += 1


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in labels.values())
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped, strict=True)) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "NaN" if math.isnan(value) else repr(float(value))


class ServerMetrics:
    """Everything /metrics shows. `observe_request` per finished request, `observe_round` per learner round."""

    def __init__(self, learner: str) -> None:
        self._lock = threading.Lock()
        self.learner = learner
        self.http = defaultdict(int)  # (path, status code) -> responses
        self.finished = defaultdict(int)  # (finish reason, learned) -> requests
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.decode_seconds = 0.0
        self.drafted = 0
        self.accepted = 0
        self.tau = Histogram(TAU_BUCKETS)
        self.alpha = Histogram(ALPHA_BUCKETS)
        self.latency = Histogram(SECONDS_BUCKETS)
        self.ttft = Histogram(SECONDS_BUCKETS)
        self.queue_wait = Histogram(SECONDS_BUCKETS)
        self.tokens_per_s = Histogram(TOKENS_PER_S_BUCKETS)
        self.last_tokens_per_s = 0.0
        self.rounds = 0
        self.updates = 0
        self.update_seconds = 0.0
        self.update_blocking_seconds = 0.0
        self.learner_errors = 0
        self.checkpoints = 0
        self.telemetry: dict[str, float] = {}  # last round's scalar learner telemetry (loss, grad_norm, ...)
        self.hedge_weights: list[float] = []
        self.expert_losses: list[float] = []

    def count_http(self, path: str, status: int) -> None:
        with self._lock:
            self.http[(path, status)] += 1

    def observe_request(self, stats: dict, finish_reason: str, learned: bool, queue_s: float, ttft_s: float) -> None:
        """`stats`: RequestStats.to_dict() of a request that produced at least its first token."""
        with self._lock:
            self.finished[(finish_reason, learned)] += 1
            self.prompt_tokens += stats["prompt_tokens"]
            self.completion_tokens += stats["new_tokens"]
            self.decode_seconds += stats["wall_s"]
            self.drafted += stats["drafted"]
            self.accepted += stats["accepted"]
            self.tau.observe(stats["tau"])
            if stats["drafted"]:
                self.alpha.observe(stats["alpha"])
            self.latency.observe(queue_s + stats["wall_s"])
            self.ttft.observe(ttft_s)
            self.queue_wait.observe(queue_s)
            self.tokens_per_s.observe(stats["tokens_per_s"])
            self.last_tokens_per_s = stats["tokens_per_s"]

    def observe_round(self, record: dict, saved: bool) -> None:
        """One round record of the learner session (`OnlineLearning.after_request`); `saved`: whether its boundary
        took a snapshot (`SessionStatus.last_round_saved`)."""
        with self._lock:
            self.rounds += 1
            self.checkpoints += int(saved)
            if "update_s" in record:
                self.updates += 1
                self.update_seconds += float(record["update_s"])
            self.update_blocking_seconds += float(record.get("update_blocking_s", 0.0))
            skip = {"round", "updated_round", "requests", "tokens", "positions", "update_s", "update_blocking_s"}
            skip.add("decode_s")
            self.telemetry = {
                k: float(v)
                for k, v in record.items()
                if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
            }
            if isinstance(record.get("weights"), list):
                self.hedge_weights = [float(w) for w in record["weights"]]
            if isinstance(record.get("expert_losses"), list):
                self.expert_losses = [float(x) for x in record["expert_losses"]]

    def count_learner_error(self) -> None:
        with self._lock:
            self.learner_errors += 1

    def render(self, queue_depth: int, in_flight: int, draft_round: int) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, dict, float]]) -> None:
            out.append(f"# HELP {PREFIX}_{name} {help_text}")
            out.append(f"# TYPE {PREFIX}_{name} {kind}")
            for suffix, labels, value in samples:
                out.append(f"{PREFIX}_{name}{suffix}{_labels(labels)} {_number(value)}")

        def histogram(name: str, help_text: str, h: Histogram) -> None:
            samples, running = [], 0
            for bound, count in zip(h.buckets, h.counts, strict=True):
                running += count
                samples.append(("_bucket", {"le": _number(bound)}, running))
            samples += [("_bucket", {"le": "+Inf"}, h.count), ("_sum", {}, h.sum), ("_count", {}, h.count)]
            family(name, "histogram", help_text, samples)

        with self._lock:
            family(
                "http_responses_total",
                "counter",
                "HTTP responses by path and status code.",
                [("", {"path": p, "code": str(c)}, n) for (p, c), n in sorted(self.http.items())],
            )
            family(
                "requests_total",
                "counter",
                "Decoded requests by finish reason and whether the draft learned from them.",
                [
                    ("", {"finish_reason": r, "learned": str(learned).lower()}, n)
                    for (r, learned), n in sorted(self.finished.items())
                ],
            )
            family(
                "prompt_tokens_total", "counter", "Prompt tokens of decoded requests.", [("", {}, self.prompt_tokens)]
            )
            family("completion_tokens_total", "counter", "Generated tokens.", [("", {}, self.completion_tokens)])
            family("decode_seconds_total", "counter", "Wall time spent decoding.", [("", {}, self.decode_seconds)])
            family("drafted_tokens_total", "counter", "Tokens proposed by the draft.", [("", {}, self.drafted)])
            family("accepted_tokens_total", "counter", "Drafted tokens the target accepted.", [("", {}, self.accepted)])
            histogram("tau", "Per request: new tokens per target forward (Spec-Bench tau).", self.tau)
            histogram("alpha", "Per request: accepted / drafted tokens.", self.alpha)
            histogram("request_seconds", "Queue wait plus decoding time of a request.", self.latency)
            histogram("time_to_first_token_seconds", "From arrival to the first generated token.", self.ttft)
            histogram("queue_wait_seconds", "Time a request waited for the decoder.", self.queue_wait)
            histogram("tokens_per_second", "Per request: new tokens / decoding wall time.", self.tokens_per_s)
            family(
                "last_tokens_per_second", "gauge", "Tokens/s of the last request.", [("", {}, self.last_tokens_per_s)]
            )
            family("queue_depth", "gauge", "Requests waiting for the decoder.", [("", {}, queue_depth)])
            family("in_flight", "gauge", "Requests being decoded (0 or 1).", [("", {}, in_flight)])
            family(
                "learner_rounds_total",
                "counter",
                "Finished learning rounds.",
                [("", {"learner": self.learner}, self.rounds)],
            )
            family("learner_round", "gauge", "Round of the published draft.", [("", {}, draft_round)])
            family("learner_updates_total", "counter", "Draft updates applied.", [("", {}, self.updates)])
            family(
                "learner_update_seconds_total",
                "counter",
                "Time spent in draft updates.",
                [("", {}, self.update_seconds)],
            )
            family(
                "learner_update_blocking_seconds_total",
                "counter",
                "Time decoding waited for an update at round boundaries.",
                [("", {}, self.update_blocking_seconds)],
            )
            family("learner_errors_total", "counter", "Failed learning rounds.", [("", {}, self.learner_errors)])
            family("checkpoints_total", "counter", "Draft-state snapshots written.", [("", {}, self.checkpoints)])
            family(
                "learner_telemetry",
                "gauge",
                "Last round's learner telemetry (loss, grad_norm, hint_error, tau, alpha, ...).",
                [("", {"name": k}, v) for k, v in sorted(self.telemetry.items())],
            )
            family(
                "learner_hedge_weight",
                "gauge",
                "Hedge weight of each expert of the ensemble learner.",
                [("", {"expert": str(i)}, w) for i, w in enumerate(self.hedge_weights)],
            )
            family(
                "learner_expert_loss",
                "gauge",
                "Last round's loss of each expert of the ensemble learner (at its own iterate).",
                [("", {"expert": str(i)}, x) for i, x in enumerate(self.expert_losses)],
            )
            for key, help_text in ROUND_GAUGES.items():
                if key in self.telemetry:
                    family(f"learner_{key}", "gauge", help_text, [("", {}, self.telemetry[key])])
        return "\n".join(out) + "\n"
