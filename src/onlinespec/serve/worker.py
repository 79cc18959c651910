"""The decoding thread: requests wait in a bounded queue and are decoded one at a time (batch 1).

Each finished (or aborted) request's stats go to the online learner, whose round boundaries publish new draft
weights; that happens here, between requests, never during one. With the "overlap" schedule the update itself
runs in the learner's background thread, so decoding does not wait for it. A job is aborted between two decoding
steps when its client went away, its deadline passed, or the server's shutdown grace ran out; an aborted
request's verify steps are exact feedback, so it still counts towards the round and the learner stays consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from onlinespec.decoding.config import GenerationConfig
from onlinespec.errors import UserError
from onlinespec.online.counting_draft import CountingDraft
from onlinespec.online.session import SessionStatus
from onlinespec.online.trainable_draft import TrainableDraft
from onlinespec.pipeline import Generation, GenerationResult, Pipeline
from onlinespec.serve.errors import ApiError
from onlinespec.serve.metrics import ServerMetrics
from onlinespec.text_stream import TextStream

log = logging.getLogger("onlinespec.serve")


@dataclass
class Delta:
    """New text that can be shown (streaming jobs only)."""

    text: str


@dataclass
class Done:
    result: GenerationResult
    tail: str  # streaming: the text not yet sent as a Delta
    speculative: dict  # per-request stats and serving details (the response's `speculative` field)


@dataclass
class Failed:
    error: ApiError


@dataclass
class Job:
    """One request, handed from an HTTP handler (event loop) to the decoding thread; events flow back."""

    prompt_ids: torch.Tensor  # LongTensor [T]
    cfg: GenerationConfig
    learn: bool  # False: private, never learned from (feedback opt-out)
    stream: bool
    deadline: float  # time.monotonic() after which the request is aborted (504)
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    created: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: Delta | Done | Failed) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is already closed: nobody is listening
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        self.cancelled.set()


def tensors_digest(named: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, fp32 bytes) of every tensor, in name order: identifies a draft's weights."""
    digest = hashlib.sha256()
    for name in sorted(named):
        digest.update(name.encode())
        digest.update(named[name].detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


class Worker:
    """Owns the pipeline and its learner session (`pipe.enable_learning`, or none: a static draft, nothing saved):
    only its thread decodes, learns and publishes."""

    def __init__(self, pipe: Pipeline, metrics: ServerMetrics, max_queue: int, request_timeout_s: float):
        self.pipe = pipe
        self.metrics = metrics
        self.request_timeout_s = request_timeout_s
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.draft_lock = threading.Lock()  # publication (after_request) vs. reading the live draft
        self.in_flight = 0
        self.accepting = True
        self.abort_after = math.inf  # time.monotonic() after which running jobs are aborted (shutdown)
        self._thread = threading.Thread(target=self._run, name="onlinespec-decoder", daemon=True)
        self._closed = False

    # --- event-loop side ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, or refuse it: 503 while shutting down or when the queue is full."""
        if not self.accepting:
            raise ApiError(503, "the server is shutting down", code="shutting_down")
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise ApiError(
                503,
                f"the server is busy: {self.jobs.maxsize} requests are already waiting; retry later",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after_s())},
            ) from None

    def retry_after_s(self) -> int:
        """Seconds until a queue slot is likely free: one mean request time (at least 1)."""
        mean = self.metrics.latency.sum / self.metrics.latency.count if self.metrics.latency.count else 1.0
        return max(1, math.ceil(mean))

    def begin_shutdown(self, grace_s: float) -> None:
        """Refuse new requests; the queued and running ones may finish within `grace_s`, then they are aborted."""
        self.accepting = False
        self.abort_after = time.monotonic() + grace_s

    def learning_status(self) -> SessionStatus | None:
        """The learner session's telemetry view, or None when the server does not learn."""
        return self.pipe.online.status() if self.pipe.online is not None else None

    def draft_memory(self) -> dict[str, float] | None:
        """What a counting (lookup) draft's shared index holds now; None for other drafts. Read without the draft
        lock: plain numbers the decoding thread updates between requests."""
        draft = self.pipe.draft
        return draft.memory() if isinstance(draft, CountingDraft) else None

    def draft_sources(self) -> dict | None:
        """A hybrid draft's per-source counts now (drafts/source_gate.py), None for other drafts. Read without the
        draft lock, as `draft_memory`: counters the decoding thread increments."""
        report = getattr(self.pipe.draft, "report", None)
        return report() if report is not None else None

    def draft_info(self) -> dict:
        """Which draft is live: its round and a digest of its trainable weights (blocks briefly; use a thread)."""
        draft = self.pipe.draft
        with self.draft_lock:  # no publication while the weights are read: round and digest belong together
            status = self.learning_status()
            info = {
                "draft": getattr(draft, "name", None),
                "learner": status.learner if status else None,
                "round": status.round if status else 0,
            }
            if isinstance(draft, TrainableDraft):  # the live draft's weights (a learner publishes into them)
                named = dict(draft.model.named_parameters())
                info["digest"] = tensors_digest({name: named[name] for name in draft.trainable})
            if isinstance(draft, CountingDraft):  # the lookup draft's index (the learner adds to it)
                info["index"] = draft.memory()
        return info

    def shutdown(self) -> None:
        """Stop the decoding thread, then finish the learner's pending update and save the state. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.accepting = False
        if self._thread.is_alive():
            self.abort_after = min(self.abort_after, time.monotonic())
            self.jobs.put(None)
            self._thread.join()
        if self.pipe.online is not None:
            try:
                with self.draft_lock:
                    self.pipe.online.close()
            except UserError as exc:  # the final snapshot could not be written: one line, the last good one stays
                log.error("%s", exc)
                return
            status = self.pipe.online.status()
            if status.state_dir:
                log.info("saved draft state (round %d) to %s", status.round, status.state_dir)

    # --- decoding thread -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.in_flight = 1
            try:
                self._serve(job)
            except Exception as exc:  # a bug: answer 500, keep serving, keep the traceback in the log
                log.exception("request failed")
                job.emit(Failed(ApiError(500, f"internal error: {exc!r}", code="internal_error")))
            finally:
                self.in_flight = 0

    def _abort_reason(self, job: Job) -> ApiError | None:
        now = time.monotonic()
        if job.cancelled.is_set():
            return ApiError(499, "the client closed the request", code="cancelled")
        if now > job.deadline:
            return ApiError(
                504,
                f"the request did not finish within {self.request_timeout_s:g} s (--request-timeout)",
                code="timeout",
            )
        if now > self.abort_after:
            return ApiError(503, "the server is shutting down; the request was aborted", code="shutting_down")
        return None

    def _serve(self, job: Job) -> None:
        started = time.monotonic()
        refused = self._abort_reason(job)
        if refused is not None:
            job.emit(Failed(refused))
            return
        status = self.learning_status()
        round_used = status.round if status is not None else 0
        generation = self.pipe.start(job.prompt_ids, job.cfg, learn=job.learn)  # not learn: a private request
        text = TextStream(self.pipe.tokenizer, job.cfg.stop) if job.stream else None
        first_token_at, aborted = None, None
        steps = iter(generation)
        try:
            for _ in steps:
                first_token_at = first_token_at or time.monotonic()
                if text is not None and (piece := text.push(generation.stop.token_ids)):
                    job.emit(Delta(piece))
                if (aborted := self._abort_reason(job)) is not None:
                    break
        finally:
            steps.close()  # an abandoned request leaves no half-run generator behind
        stop, stats = generation.stop, generation.stats
        result = GenerationResult(stop.text(), list(stop.token_ids), stop.finish_reason or "length", stats)
        learned = status is not None and job.learn and status.learning
        if status is not None and job.learn:
            self._after_request(generation)
        finished = time.monotonic()
        queue_s = started - job.created
        ttft_s = (first_token_at or finished) - job.created
        finish_reason = aborted.code if aborted is not None else result.finish_reason
        self.metrics.observe_request(stats.to_dict(), finish_reason, learned, queue_s, ttft_s)
        if aborted is not None:
            job.emit(Failed(aborted))
            return
        speculative = {
            **stats.to_dict(),
            "learned": learned,
            "draft_round": round_used,
            "queue_s": round(queue_s, 4),
            "time_to_first_token_s": round(ttft_s, 4),
            "latency_s": round(finished - job.created, 4),
        }
        job.emit(Done(result, text.finish(result.text) if text is not None else "", speculative))

    def _after_request(self, generation: Generation) -> None:
        """Hand a request (finished or aborted) to the learner; at a round boundary this publishes w_{t+1} and
        may checkpoint."""
        try:
            with self.draft_lock:
                record = generation.finish()
        except Exception:  # a failed update: logged and counted, serving goes on (checkpoint failures never raise)
            log.exception("draft update failed")
            self.metrics.count_learner_error()
            return
        if record is not None:
            status = self.learning_status()
            saved = status is not None and status.last_round_saved
            self.metrics.observe_round(record)
            log.info(
                "round %d: tau %.3f alpha %.3f over %d requests%s",
                record["round"],
                record["tau"],
                record["alpha"],
                record["requests"],
                f"; checkpoint to {status.state_dir}" if saved else "",
            )
