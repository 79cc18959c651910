"""The prequential round loop (SPEC.md §2): decode a round with the published draft w_t, then update, then
publish w_{t+1} at the round boundary. Nothing changes mid-request: publication happens only in `after_request`.

Schedules:
- "sync": the update runs between rounds, on the caller's thread; its time is part of end-to-end figures.
- "overlap" (default): the update of round t runs in a background thread while round t+1 decodes with w_t; it
  is published at the next boundary (one round of delay), and its learner telemetry (loss, grad norm, ...)
  appears in that boundary's record. Decoding waits at a boundary only if the update has not finished.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.metrics import RequestStats
from onlinespec.errors import UserError
from onlinespec.online.draft_objective import DraftObjective, training_copy
from onlinespec.online.feedback_buffer import FeedbackBuffer
from onlinespec.online.learners import LearnerConfig, make_learner
from onlinespec.online.losses import LOSSES
from onlinespec.online.state_store import load_state, save_state

SCHEDULES = ("sync", "overlap")


@dataclass
class OnlineConfig:
    learner: str = "ogd"
    learner_cfg: LearnerConfig = field(default_factory=LearnerConfig)
    round_requests: int = 8  # a round ends after this many requests...
    round_tokens: int = 0  # ...or, when > 0, after this many verified (new) tokens instead
    loss: str = "forward_kl"
    positions: str = "all"  # "all" verified positions, or "mismatch" only (OSD)
    top_k: int = 64  # kept entries of each target distribution (0 = full)
    max_positions: int = 65536  # feedback buffer bound
    schedule: str = "overlap"  # measured faster end to end on 2 cores (README: bench_online.py at commit 6434106)
    state_dir: str | None = None  # load/save the evolving draft and learner here
    save_every: int = 1  # rounds between snapshots (and one at close)
    save_in_background: bool = False  # copy the state at the boundary, write it in a thread (off the decoding path)
    # "overlap" only: False postpones a round boundary that finds the previous update still running to a later
    # request, so decoding never waits for an update (rounds may then grow beyond round_requests/round_tokens).
    wait_for_update: bool = True
    telemetry: str | None = None  # JSON lines, one per round

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise UserError(f"unknown loss '{self.loss}': choose one of {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule '{self.schedule}': choose one of {', '.join(SCHEDULES)}")
        if self.round_requests < 1 and self.round_tokens < 1:
            raise UserError("a round needs round_requests >= 1 or round_tokens >= 1")
        if self.save_every < 1:
            raise UserError(f"save_every must be >= 1, got {self.save_every}")


@dataclass
class RoundCounters:
    requests: int = 0
    new_tokens: int = 0
    target_forwards: int = 0
    drafted: int = 0
    accepted: int = 0
    wall_s: float = 0.0

    def add(self, stats: RequestStats) -> None:
        self.requests += 1
        self.new_tokens += stats.new_tokens
        self.target_forwards += stats.target_forwards
        self.drafted += stats.drafted
        self.accepted += stats.accepted
        self.wall_s += stats.wall_s


class OnlineLearning:
    """Attach to an engine: feedback flows into a buffer, rounds update a training copy of the draft, and the
    new weights are copied into the live draft at round boundaries."""

    def __init__(self, engine: SpeculativeEngine, cfg: OnlineConfig) -> None:
        draft = engine.draft
        if not hasattr(draft, "example_terms"):
            raise UserError(f"online learning does not support draft '{getattr(draft, 'name', draft)}'")
        self.cfg = cfg
        self.draft = draft
        # The static baseline decodes without learning: no buffer, no update, zero update time.
        self.learning = cfg.learner != "static"
        self.buffer = FeedbackBuffer(cfg.top_k, cfg.positions, cfg.max_positions)
        self._private = False  # True while a request that must not be learned from decodes
        if self.learning:
            engine.add_listener(self._on_feedback)
        named_live = dict(draft.model.named_parameters())
        self.live = [named_live[n] for n in draft.trainable]
        self.objective = DraftObjective(draft, training_copy(draft.model, draft.trainable), cfg.loss)
        self.learner = make_learner(cfg.learner, self.objective.parameters(), cfg.learner_cfg)
        self.round = 0
        self.counters = RoundCounters()
        self.update_s = 0.0  # all update time so far (sync: on the decoding path; overlap: in the background)
        self.history: list[dict] = []
        self._pending: threading.Thread | None = None
        self._pending_result: dict = {}
        self._saver: threading.Thread | None = None  # a snapshot being written (save_in_background)
        self._saver_error: str | None = None
        if cfg.state_dir:
            self._restore(cfg.state_dir)

    def _on_feedback(self, record) -> None:
        if not self._private:
            self.buffer.add(record)

    @contextmanager
    def private(self) -> Iterator[None]:
        """Decode the requests inside this block without learning from them (feedback opt-out): their verify
        steps are not buffered. Do not pass their stats to `after_request` either."""
        self._private = True
        try:
            yield
        finally:
            self._private = False

    # --- round boundary -------------------------------------------------------------------------------------
    def after_request(self, stats: RequestStats) -> dict | None:
        """Call after every request; at a round boundary this updates/publishes and returns the round telemetry."""
        self.counters.add(stats)
        c = self.counters
        if self.cfg.round_tokens > 0:
            if c.new_tokens < self.cfg.round_tokens:
                return None
        elif c.requests < self.cfg.round_requests:
            return None
        if not self.cfg.wait_for_update and self._pending is not None and self._pending.is_alive():
            return None  # the previous round's update is still running: extend this round instead of waiting
        return self.end_round()

    def end_round(self) -> dict:
        counters, self.counters = self.counters, RoundCounters()
        examples = self.buffer.drain()
        self.round += 1
        tic = time.perf_counter()
        if not self.learning:
            result = {}
        elif self.cfg.schedule == "sync":
            result = self._update(examples)
            self._publish()
        else:  # the update finishing now is the one launched at the previous boundary
            result = self._finish_pending()
            self._publish()
        blocking_s = time.perf_counter() - tic
        record = {
            "round": self.round,
            "learner": self.cfg.learner,
            "requests": counters.requests,
            "tokens": counters.new_tokens,
            "tau": counters.new_tokens / counters.target_forwards if counters.target_forwards else 0.0,
            "alpha": counters.accepted / counters.drafted if counters.drafted else 0.0,
            "decode_s": counters.wall_s,
            "update_blocking_s": blocking_s,  # time decoding waited at this boundary
            "positions": sum(len(e.pred_index) for e in examples),
            # the learner's own round count must not overwrite ours: in "overlap" it lags by one
            **{("updated_round" if key == "round" else key): value for key, value in result.items()},
        }
        self.history.append(record)
        if self.cfg.telemetry:
            with open(self.cfg.telemetry, "a") as fh:
                fh.write(json.dumps(_jsonable(record)) + "\n")
        # Save while no update is in flight, so the snapshot is consistent (in "overlap" it lacks this round's
        # feedback, which is being learned in the background: a crash loses at most that round).
        if self.cfg.state_dir and self.round % self.cfg.save_every == 0:
            if self.cfg.save_in_background:
                self._save_in_background(self.cfg.state_dir)
            else:
                self.save(self.cfg.state_dir)
        if self.learning and self.cfg.schedule == "overlap":
            self._pending = threading.Thread(target=self._background_update, args=(examples,), daemon=True)
            self._pending.start()
        return record

    def close(self) -> None:
        """Finish a pending background update, publish it, and save the state."""
        if self._pending is not None:
            self._finish_pending()
            self._publish()
        self._finish_saving()
        if self.cfg.state_dir:
            self.save(self.cfg.state_dir)

    # --- updates ---------------------------------------------------------------------------------------------
    def _update(self, examples) -> dict:
        if not examples:
            return {"update_s": 0.0, "skipped": "no feedback this round"}
        tic = time.perf_counter()
        telemetry = self.learner.update(self.objective.grad_fn(examples))
        elapsed = time.perf_counter() - tic
        self.update_s += elapsed
        return {**telemetry, "update_s": elapsed}

    def _background_update(self, examples) -> None:
        try:
            self._pending_result = self._update(examples)
        except Exception as exc:  # surfaced at the next boundary, never swallowed
            self._pending_result = {"error": repr(exc)}

    def _finish_pending(self) -> dict:
        if self._pending is None:
            return {}
        self._pending.join()
        self._pending = None
        result, self._pending_result = self._pending_result, {}
        if "error" in result:
            raise RuntimeError(f"background draft update failed: {result['error']}")
        return result

    @torch.no_grad()
    def _publish(self) -> None:
        """w_{t+1} -> the live draft (between requests only)."""
        for live, trained in zip(self.live, self.objective.parameters(), strict=True):
            live.copy_(trained)

    # --- persistence -----------------------------------------------------------------------------------------
    def save(self, directory: str) -> Path:
        named = dict(zip(self.draft.trainable, self.objective.parameters(), strict=True))
        return save_state(directory, named, self.learner.state_dict(), self._info())

    def _info(self) -> dict:
        return {"round": self.round, "draft": self.draft.name, "config": _jsonable(asdict(self.cfg))}

    def _save_in_background(self, directory: str) -> None:
        """Copy the state now (no update is in flight, so it is consistent) and write it in a thread; one write
        at a time. A write still running from the previous checkpoint is waited for first."""
        self._finish_saving()
        named = {n: p.detach().clone() for n, p in zip(self.draft.trainable, self.objective.parameters(), strict=True)}
        args = (directory, named, self.learner.state_dict(), self._info())
        self._saver = threading.Thread(target=self._write_snapshot, args=args, daemon=True)
        self._saver.start()

    def _write_snapshot(self, *args) -> None:
        try:
            save_state(*args)
        except Exception as exc:  # surfaced at the next checkpoint or at close, never swallowed
            self._saver_error = repr(exc)

    def _finish_saving(self) -> None:
        if self._saver is None:
            return
        self._saver.join()
        self._saver = None
        error, self._saver_error = self._saver_error, None
        if error is not None:
            raise RuntimeError(f"background checkpoint failed: {error}")

    def _restore(self, directory: str) -> None:
        loaded = load_state(directory)
        if loaded is None:
            return
        tensors, learner_state, info = loaded
        if info.get("draft") != self.draft.name or set(tensors) != set(self.draft.trainable):
            raise UserError(
                f"draft state in '{directory}' was saved for draft '{info.get('draft')}', not '{self.draft.name}': "
                "use another --draft-state directory"
            )
        self.learner.load_state_dict(learner_state)
        self.round = int(info["round"])
        self._publish()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
