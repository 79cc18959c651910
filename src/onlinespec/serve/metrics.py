"""Server metrics for /metrics: plain numbers and histograms keyed by family name under one lock (the decoding thread
writes, the event loop reads), exposed by prometheus-client through a per-server registry that reads them per scrape."""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections import defaultdict

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

PREFIX = "onlinespec"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what `generate_latest` writes: the text format, version 0.0.4
HELP = {  # every family /metrics shows, in order; a name ending in _total is a counter, one in BUCKETS a histogram
    "http_responses_total": "HTTP responses by path and status code.",
    "requests_total": "Decoded requests by finish reason and whether the draft learned from them.",
    "prompt_tokens_total": "Prompt tokens of decoded requests.",
    "completion_tokens_total": "Generated tokens.",
    "decode_seconds_total": "Wall time spent decoding.",
    "drafted_tokens_total": "Tokens proposed by the draft.",
    "accepted_tokens_total": "Drafted tokens the target accepted.",
    "tau": "Per request: new tokens per target forward (Spec-Bench tau).",
    "alpha": "Per request: accepted / drafted tokens.",
    "request_seconds": "Queue wait plus decoding time of a request.",
    "time_to_first_token_seconds": "From arrival to the first generated token.",
    "queue_wait_seconds": "Time a request waited for the decoder.",
    "tokens_per_second": "Per request: new tokens / decoding wall time.",
    "last_tokens_per_second": "Tokens/s of the last request.",
    "queue_depth": "Requests waiting for the decoder.",
    "in_flight": "Requests being decoded (0 or 1).",
    "learner_rounds_total": "Finished learning rounds.",
    "learner_round": "Round of the published draft.",
    "learner_updates_total": "Draft updates applied.",
    "learner_update_seconds_total": "Time spent in draft updates.",
    "learner_update_blocking_seconds_total": "Time decoding waited for an update at round boundaries.",
    "learner_errors_total": "Failed learning rounds.",
    "checkpoints_total": "Draft-state snapshots written.",
    "checkpoint_failures_total": "Draft-state snapshots that could not be written (the last good one stays on disk).",
    "learner_telemetry": "Last round's learner telemetry (loss, grad_norm, hint_error, tau, alpha, ...).",
    "learner_hedge_weight": "Hedge weight of each expert of the ensemble learner.",
    "learner_expert_loss": "Last round's loss of each expert of the ensemble learner (at its own iterate).",
    # last round's figures with a gauge of their own (every scalar is also in learner_telemetry{name=...})
    "learner_loss": "Last round's loss at the draft it decoded with (w_t), on that round's feedback.",
    "learner_loss_after": "Last round's loss after its update (w_{t+1}), on the same feedback.",
    "learner_oov_rate": "Fraction of last round's positions whose target top-1 is outside the draft vocabulary.",
    "learner_update_norm_ratio": "||w_{t+1} - w_t|| / ||w_t|| of last round's update.",
    # a draft that learns by counting (lookup): its cross-request n-gram index now (NaN for other drafts)
    "draft_index_entries": "Lookup draft: (context, next token) entries in its cross-request n-gram index.",
    "draft_index_max_entries": "Lookup draft: the cap on those entries (least recently learned evicted first).",
    "draft_index_bytes": "Lookup draft: approximate bytes the index holds.",
    # the hybrid draft's sources (drafts/source_gate.py), since the server started: request, shared, head
    "draft_source_steps_total": "Hybrid draft: verify steps each source drafted.",
    "draft_source_scored_total": "Hybrid draft: proposals scored one step later (drafted, or held back by the gate).",
    "draft_source_first_right_total": "Hybrid draft: scored proposals whose first token the target committed.",
    "draft_source_held_back_total": "Hybrid draft: earlier traffic's proposals the gate kept out.",
}
ROUND_GAUGES = ("loss", "loss_after", "oov_rate", "update_norm_ratio")  # record keys -> learner_<key>
INDEX_GAUGES = ("entries", "max_entries", "bytes")  # CountingDraft.memory() keys -> draft_index_<key>
SOURCE_COUNTERS = ("steps", "scored", "first_right", "held_back")  # HybridDraft.report() keys -> draft_source_<key>
LABELS = {  # label names of the labelled families, whose values are {tuple of label values: number}
    "http_responses_total": ("path", "code"),
    "requests_total": ("finish_reason", "learned"),
    "learner_rounds_total": ("learner",),
    "learner_telemetry": ("name",),
    "learner_hedge_weight": ("expert",),
    "learner_expert_loss": ("expert",),
    **{f"draft_source_{key}_total": ("source",) for key in SOURCE_COUNTERS},
}
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BUCKETS = {  # upper bounds of the histograms' buckets (+Inf added)
    "tau": (1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0),
    "alpha": (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "request_seconds": SECONDS_BUCKETS,
    "time_to_first_token_seconds": SECONDS_BUCKETS,
    "queue_wait_seconds": SECONDS_BUCKETS,
    "tokens_per_second": (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0),
}


class Histogram:
    """Observed values counted per bucket (a value lands in the first bucket whose upper bound is >= it), with their
    sum and count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def family(self, name: str, help_text: str) -> HistogramMetricFamily:
        bounds = [floatToGoString(b) for b in self.buckets] + ["+Inf"]
        cumulative = zip(bounds, itertools.accumulate(self.counts), strict=True)
        return HistogramMetricFamily(name, help_text, buckets=list(cumulative), sum_value=self.sum)


def _initial(name: str) -> float | Histogram | dict[tuple[str, ...], float]:
    if name in BUCKETS:
        return Histogram(BUCKETS[name])
    return defaultdict(int) if name in LABELS else 0


def _family(name: str, value: float | Histogram | dict[tuple[str, ...], float]) -> Metric:
    """The family `name` (without the prefix) holding `value`, as `_initial(name)` made it."""
    full, help_text = f"{PREFIX}_{name}", HELP[name]
    if isinstance(value, Histogram):
        return value.family(full, help_text)
    kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
    if name not in LABELS:
        return kind(full, help_text, value=value)
    family = kind(full, help_text, labels=LABELS[name])
    for label_values, number in sorted(value.items()):
        family.add_metric(label_values, number)
    return family


class ServerMetrics:
    """Everything /metrics shows (`values`: family name without the prefix -> number, `Histogram` or labelled
    numbers). `observe_request` per finished request, `observe_round` per learner round; `render` is the exposition,
    collected from `registry`: this server's own, never prometheus-client's global one."""

    def __init__(self, learner: str) -> None:
        self._lock = threading.RLock()  # `render` holds it while the registry calls `collect`
        self.values = {name: _initial(name) for name in HELP}
        self.values["learner_rounds_total"][(learner,)] = 0
        self.values.update({f"learner_{key}": math.nan for key in ROUND_GAUGES})  # none before the first round
        self.values.update({f"draft_index_{key}": math.nan for key in INDEX_GAUGES})  # none without a lookup draft
        self.learner = learner
        self.latency: Histogram = self.values["request_seconds"]  # Worker.retry_after_s reads its mean
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def count_http(self, path: str, status: int) -> None:
        with self._lock:
            self.values["http_responses_total"][(path, str(status))] += 1

    def observe_request(self, stats: dict, finish_reason: str, learned: bool, queue_s: float, ttft_s: float) -> None:
        """`stats`: RequestStats.to_dict() of a request that produced at least its first token."""
        with self._lock:
            values = self.values
            values["requests_total"][(finish_reason, str(learned).lower())] += 1
            values["prompt_tokens_total"] += stats["prompt_tokens"]
            values["completion_tokens_total"] += stats["new_tokens"]
            values["decode_seconds_total"] += stats["wall_s"]
            values["drafted_tokens_total"] += stats["drafted"]
            values["accepted_tokens_total"] += stats["accepted"]
            values["tau"].observe(stats["tau"])
            if stats["drafted"]:
                values["alpha"].observe(stats["alpha"])
            values["request_seconds"].observe(queue_s + stats["wall_s"])
            values["time_to_first_token_seconds"].observe(ttft_s)
            values["queue_wait_seconds"].observe(queue_s)
            values["tokens_per_second"].observe(stats["tokens_per_s"])
            values["last_tokens_per_second"] = stats["tokens_per_s"]

    def observe_round(self, record: dict) -> None:
        """One round record of the learner session (`OnlineLearning.after_request`)."""
        with self._lock:
            values = self.values
            values["learner_rounds_total"][(self.learner,)] += 1
            if "update_s" in record:
                values["learner_updates_total"] += 1
                values["learner_update_seconds_total"] += float(record["update_s"])
            values["learner_update_blocking_seconds_total"] += float(record.get("update_blocking_s", 0.0))
            skip = {"round", "updated_round", "requests", "tokens", "positions", "update_s", "update_blocking_s"}
            skip.add("decode_s")
            values["learner_telemetry"] = {
                (k,): float(v)
                for k, v in record.items()
                if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
            }
            for key in ("weights", "expert_losses"):
                if isinstance(record.get(key), list):
                    name = "learner_hedge_weight" if key == "weights" else "learner_expert_loss"
                    values[name] = {(str(i),): float(x) for i, x in enumerate(record[key])}
            for key in ROUND_GAUGES:
                if isinstance(record.get(key), int | float):
                    values[f"learner_{key}"] = float(record[key])

    def observe_checkpoints(self, written: int, failed: int) -> None:
        """The session's own counts of snapshots written and failed (SessionStatus), as of now."""
        with self._lock:
            self.values["checkpoints_total"], self.values["checkpoint_failures_total"] = written, failed

    def observe_draft_memory(self, memory: dict[str, float] | None) -> None:
        """A counting draft's `memory()` as of now (None: the draft has no index)."""
        if memory is None:
            return
        with self._lock:
            for key in INDEX_GAUGES:
                self.values[f"draft_index_{key}"] = float(memory[key])

    def observe_draft_sources(self, report: dict | None) -> None:
        """A hybrid draft's `report()` as of now ({source: counts}; None: the draft has one source)."""
        if report is None:
            return
        with self._lock:
            for key in SOURCE_COUNTERS:
                self.values[f"draft_source_{key}_total"] = {
                    (source,): counts[key] for source, counts in report.items() if isinstance(counts, dict)
                }

    def count_learner_error(self) -> None:
        with self._lock:
            self.values["learner_errors_total"] += 1

    def render(self, queue_depth: int, in_flight: int, draft_round: int) -> bytes:
        """The exposition (media type `CONTENT_TYPE`) of every metric, with the worker's current numbers."""
        with self._lock:
            self.values.update(queue_depth=queue_depth, in_flight=in_flight, learner_round=draft_round)
            return generate_latest(self.registry)

    def collect(self) -> list[Metric]:
        """prometheus-client's collector hook: every family, from the current values."""
        with self._lock:
            return [_family(name, value) for name, value in self.values.items()]
