"""The prequential round loop (docs/method.md §2): decode a round with the published draft w_t, then update, then
publish w_{t+1} at the round boundary. Nothing changes mid-request: publication happens only in `after_request`.

The session's public surface is small: `after_request(stats)` after every learned request (the round record at a
boundary), `private()` around requests that must not be learned from, `status()` (a read-only telemetry view:
round, learner, state dir, last record, last saved round, ...) and `close()`. Attach it with
`Pipeline.enable_learning(cfg)`; everything else here is private.

Schedules:
- "sync": the update runs between rounds, on the caller's thread; its time is part of end-to-end figures.
- "overlap" (default): the update of round t runs in a background thread while round t+1 decodes with w_t; it
  is published at the next boundary (one round of delay), and its learner telemetry (loss, grad norm, ...)
  appears in that boundary's record. Decoding waits at a boundary only if the update has not finished.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.metrics import RequestStats
from onlinespec.drafts.source_gate import counts_between, source_counts
from onlinespec.errors import UserError
from onlinespec.online.counting_draft import COUNT
from onlinespec.online.draft_objective import DraftObjective, training_copy
from onlinespec.online.feedback_buffer import FeedbackBuffer
from onlinespec.online.learners import LearnerConfig, make_learner, relative_change
from onlinespec.online.learners.base import snapshot
from onlinespec.online.losses import LOSSES
from onlinespec.online.prompt_feedback import TargetReadout, with_prompt_positions
from onlinespec.online.replay import ReplayBuffer, minibatches
from onlinespec.online.state_store import load_state, save_state
from onlinespec.online.trainable_draft import TrainableDraft

SCHEDULES = ("sync", "overlap")
log = logging.getLogger("onlinespec.online")


@dataclass
class OnlineConfig:
    learner: str = "ogd"
    learner_cfg: LearnerConfig = field(default_factory=LearnerConfig)
    round_requests: int = 8  # a round ends after this many requests...
    round_tokens: int = 0  # ...or, when > 0, after this many verified (new) tokens instead
    # A counting draft's n-gram index (--draft lookup, and the default hybrid draft's) learns after every
    # `index_every` learned requests: a few dict inserts (milliseconds), so by default as soon as each request ends,
    # not at the round's end; rounds still set the head's updates, the round records and the snapshots. 0 = at the
    # round boundaries only. Measured: the full preset's stream, `count`, 1.05x -> 1.12x the frozen draft's speed.
    index_every: int = 1
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
    # Several steps per round (online/replay.py): the round's update runs `epochs` passes over its training set (the
    # replayed requests, then the round's own) in mini-batches of `batch_requests` requests (0 = one batch), each
    # mini-batch one learner update of LearnerConfig.passes steps; earlier rounds' feedback is replayed from a
    # buffer of at most `replay_positions` positions (0 = no replay). Defaults: one update on the round: as before.
    batch_requests: int = 0
    epochs: int = 1
    replay_positions: int = 0
    unroll: int = 0  # EAGLE passes trained per request: 0 = the k the request drafted with; n > 0 = n
    mask_oov: bool = True  # drop positions whose target top-1 token is outside the draft vocabulary
    loss_after: bool = True  # evaluate the round's loss again after its update (telemetry, on the clock)
    # Also learn from the last N prompt positions of each request, p read off the target's prefill features
    # (online/prompt_feedback.py; feature-level head drafts only). 0 = verified positions only.
    prompt_positions: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise UserError(f"unknown loss '{self.loss}': choose one of {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule '{self.schedule}': choose one of {', '.join(SCHEDULES)}")
        if self.round_requests < 1 and self.round_tokens < 1:
            raise UserError("a round needs round_requests >= 1 or round_tokens >= 1")
        if self.index_every < 0:
            raise UserError(
                f"index_every must be >= 0 (0 = learn the index at round boundaries), got {self.index_every}"
            )
        if self.save_every < 1:
            raise UserError(f"save_every must be >= 1, got {self.save_every}")
        if self.prompt_positions < 0:
            raise UserError(
                f"prompt_positions must be >= 0 (0 = learn from verified positions only), got {self.prompt_positions}"
            )
        if self.batch_requests < 0 or self.epochs < 1 or self.replay_positions < 0 or self.unroll < 0:
            raise UserError(
                "need batch_requests >= 0 (0 = the whole round), epochs >= 1, replay_positions >= 0 (0 = no replay) "
                f"and unroll >= 0 (0 = as drafted); got {self.batch_requests}, {self.epochs}, {self.replay_positions}, "
                f"{self.unroll}"
            )


@dataclass(frozen=True)
class SessionStatus:
    """A read-only view of a session, for telemetry: nothing in it reaches back into the session."""

    learner: str  # the learner's name ("static" never updates the draft)
    learning: bool  # False for the static baseline: no feedback is buffered, no update runs
    round: int  # rounds finished (restored ones included): the published draft is w_round
    state_dir: str | None  # where snapshots are written (None: nothing is saved)
    last_record: dict[str, Any] | None  # a copy of the last round record, None before the first boundary
    last_saved_round: int | None  # the round of the last snapshot taken (restored: the one loaded), else None
    update_s: float  # all update time so far (sync: on the decoding path; overlap: in the background)
    checkpoints: int = 0  # snapshots written to state_dir (this process)
    checkpoint_failures: int = 0  # snapshots that could not be written (the last good one stays on disk)
    last_checkpoint_error: str | None = None  # why the newest failed write failed
    last_good_round: int | None = None  # the round of the newest snapshot known to be on disk
    draft_memory: dict[str, float] | None = None  # a counting draft's learned state now (entries, bytes, ...)

    @property
    def last_round_saved(self) -> bool:
        """Whether the last round's boundary took a snapshot (a checkpoint every `save_every` rounds)."""
        return self.last_record is not None and self.last_saved_round == self.last_record["round"]


class OnlineLearning:
    """Attach to an engine: feedback flows into a buffer, rounds update a training copy of the draft, and the
    new weights are copied into the live draft at round boundaries."""

    def __init__(self, engine: SpeculativeEngine, cfg: OnlineConfig) -> None:
        self._cfg = cfg
        self._engine = engine
        self._draft = engine.draft
        # The static baseline decodes without learning: no buffer, no update, zero update time.
        self._learning = cfg.learner != "static"
        self._private = False  # True while a request that must not be learned from decodes
        self._buffer = self._attach(engine.draft)
        if self._learning:
            engine.add_listener(self._on_feedback)
        self._round = 0
        self._counters = RequestStats.zero()  # the open round's requests, summed
        self._update_s = 0.0  # all update time so far (sync: on the decoding path; overlap: in the background)
        self._blocking_between_s = 0.0  # learning on the decoding thread between boundaries (this round's)
        self._history: list[dict] = []
        self._sources_seen = source_counts(self._draft)  # a hybrid's per-source counts at the last boundary
        self._last_saved_round: int | None = None
        self._pending: threading.Thread | None = None
        self._pending_result: dict = {}
        self._saver: threading.Thread | None = None  # a snapshot being written (save_in_background)
        self._checkpoints = self._checkpoint_failures = 0
        self._checkpoint_error: str | None = None
        self._last_good_round: int | None = None
        if cfg.state_dir:
            self._restore(cfg.state_dir)

    def _attach(self, draft) -> FeedbackBuffer:
        """Set up what learns `draft` (a gradient learner over a training copy); returns the feedback buffer.
        A session for another kind of draft (online/counting_session.py) overrides this and the other hooks:
        `_update`, `_publish`, `_positions`, `_draft_tensors`, `_learner_state`, `_info`, `_load`."""
        if not isinstance(draft, TrainableDraft):
            raise UserError(f"online learning does not support draft '{getattr(draft, 'name', draft)}'")
        cfg = self._cfg
        if cfg.learner == COUNT:
            raise UserError(
                f"learner '{COUNT}' learns drafts without gradients (--draft lookup, or the index of --draft hybrid); "
                f"draft '{draft.name}' learns by gradient: use ogd, optimistic or ensemble"
            )
        if cfg.prompt_positions and not isinstance(draft, TargetReadout):
            raise UserError(
                "prompt_positions needs a draft that drafts from the target's features (eagle, eagle3, medusa, "
                f"hydra), not '{draft.name}': drop --prompt-positions"
            )
        named_live = dict(draft.model.named_parameters())
        self._live = [named_live[n] for n in draft.trainable]
        self._objective = DraftObjective(
            draft, training_copy(draft.model, draft.trainable), cfg.loss, cfg.unroll, cfg.mask_oov
        )
        self._replay = ReplayBuffer(cfg.replay_positions)
        self._learner = make_learner(cfg.learner, self._objective.parameters(), cfg.learner_cfg)
        return FeedbackBuffer(cfg.top_k, cfg.positions, cfg.max_positions)

    def _on_feedback(self, record) -> None:
        if not self._private:
            self._buffer.add(record)

    @contextmanager
    def private(self) -> Iterator[None]:
        """Decode the requests inside this block without learning from them (feedback opt-out): their verify
        steps are not buffered. Do not pass their stats to `after_request` either."""
        self._private = True
        try:
            yield
        finally:
            self._private = False

    def status(self) -> SessionStatus:
        """What the session has done so far (a copy: later rounds do not change it)."""
        last = dict(self._history[-1]) if self._history else None
        return SessionStatus(
            learner=self._cfg.learner,
            learning=self._learning,
            draft_memory=self._draft_memory(),
            round=self._round,
            state_dir=self._cfg.state_dir,
            last_record=last,
            last_saved_round=self._last_saved_round,
            update_s=self._update_s,
            checkpoints=self._checkpoints,
            checkpoint_failures=self._checkpoint_failures,
            last_checkpoint_error=self._checkpoint_error,
            last_good_round=self._last_good_round,
        )

    # --- round boundary -------------------------------------------------------------------------------------
    def after_request(self, stats: RequestStats) -> dict | None:
        """Call after every learned request; at a round boundary this updates/publishes and returns the round
        record (`status().last_round_saved` then says whether the boundary took a snapshot)."""
        self._counters = self._counters + stats
        if self._learning:
            tic = time.perf_counter()
            self._after_each_request(self._counters.requests)
            self._blocking_between_s += time.perf_counter() - tic
        c = self._counters
        if self._cfg.round_tokens > 0:
            if c.new_tokens < self._cfg.round_tokens:
                return None
        elif c.requests < self._cfg.round_requests:
            return None
        if not self._cfg.wait_for_update and self._pending is not None and self._pending.is_alive():
            return None  # the previous round's update is still running: extend this round instead of waiting
        return self._end_round()

    def _end_round(self) -> dict:
        counters, self._counters = self._counters, RequestStats.zero()
        examples = self._buffer.drain()
        self._round += 1
        tic = time.perf_counter()
        if not self._learning:
            result = {}
        else:
            # on the decoding thread, between requests, whatever the schedule (e.g. a hybrid draft's n-gram index)
            result = self._boundary_update()
            if self._cfg.schedule == "sync":
                result |= self._update(examples)
            else:  # the update finishing now is the one launched at the previous boundary
                result |= self._finish_pending()
            self._publish()
        # decoding waited at this boundary, and for the learning it ran between boundaries (it is on the clock)
        blocking_s, self._blocking_between_s = time.perf_counter() - tic + self._blocking_between_s, 0.0
        record = {
            "round": self._round,
            "learner": self._cfg.learner,
            "requests": counters.requests,
            "tokens": counters.new_tokens,
            "tau": counters.tau,
            "alpha": counters.alpha,
            "decode_s": counters.wall_s,
            "update_blocking_s": blocking_s,  # time decoding waited at this boundary
            "positions": self._positions(examples),
            # the learner's own round count must not overwrite ours: in "overlap" it lags by one
            **{("updated_round" if key == "round" else key): value for key, value in result.items()},
        }
        if sources := source_counts(self._draft):  # what each source of a hybrid draft drafted in this round
            record["sources"] = counts_between(sources, self._sources_seen)
            self._sources_seen = sources
        self._history.append(record)
        if self._cfg.telemetry:
            with open(self._cfg.telemetry, "a") as fh:
                fh.write(json.dumps(_jsonable(record)) + "\n")
        # Save while no update is in flight, so the snapshot is consistent (in "overlap" it lacks this round's
        # feedback, which is being learned in the background: a crash loses at most that round).
        if self._cfg.state_dir and self._round % self._cfg.save_every == 0:
            if self._cfg.save_in_background:
                self._save_in_background(self._cfg.state_dir)
            else:
                self._save(self._cfg.state_dir)
        if self._learning and self._cfg.schedule == "overlap":
            self._pending = threading.Thread(target=self._background_update, args=(examples,), daemon=True)
            self._pending.start()
        return record

    def close(self, end_round: bool = False) -> dict | None:
        """Finish a pending background update, publish it, and save the state. With `end_round`, the open round
        (if it holds any request) first ends as at a boundary, and its record is returned (a one-request run such
        as `generate` learns from its request this way); otherwise the open round's feedback is dropped."""
        record = self._end_round() if end_round and self._counters.requests else None
        if self._pending is not None:
            self._finish_pending()
            self._publish()
        self._finish_saving()
        if self._cfg.state_dir:
            failures = self._checkpoint_failures
            self._save(self._cfg.state_dir, warn=False)  # a failure is raised below: one message, not two
            if self._checkpoint_failures > failures:
                raise UserError(
                    f"could not save the draft state to '{self._cfg.state_dir}' ({self._checkpoint_error}); "
                    f"{_kept(self._last_good_round)}"
                )
        return record

    # --- updates ---------------------------------------------------------------------------------------------
    def _update(self, examples) -> dict:
        if not examples:
            return {"update_s": 0.0, "skipped": "no feedback this round"}
        cfg, objective = self._cfg, self._objective
        tic = time.perf_counter()
        params = objective.parameters()
        before = snapshot(params)
        replayed = self._replay.examples()  # rounds < t only: this round joins the buffer after its update
        # train on the verified positions plus prompt positions; the loss telemetry stays on the verified ones
        train, prompt_added = with_prompt_positions(examples, self._draft, cfg.prompt_positions, cfg.top_k)
        steps = minibatches(replayed + train, cfg.batch_requests, cfg.epochs)
        # The round's loss at w_t: the first step's when that step is the round itself, else one more evaluation.
        only_round = len(steps) == 1 and not replayed and not prompt_added
        loss_before = None if only_round else objective.loss_at(examples, params)
        results = [self._learner.update(objective.grad_fn(batch)) for batch in steps]
        telemetry = dict(results[-1])  # the state the round ends in (ensemble weights, ...)
        telemetry["grad_norm"] = results[0]["grad_norm"]  # at w_t, on the first mini-batch
        telemetry["loss"] = results[0]["loss"] if loss_before is None else loss_before
        if len(steps) > 1:
            telemetry["update_norm_ratio"] = relative_change(before, params)  # the whole round's ||dw|| / ||w||
        if cfg.loss_after:
            telemetry["loss_after"] = objective.loss_at(examples, params)  # w_{t+1} on the same feedback
        self._replay.add(train)
        elapsed = time.perf_counter() - tic
        self._update_s += elapsed
        return {
            **telemetry,
            "steps": len(steps),
            "oov_rate": objective.oov_rate(examples),
            "prompt_positions": prompt_added,
            "replay_positions": self._replay.size,
            "replay_bytes": self._replay.nbytes,
            "update_s": elapsed,
        }

    def _after_each_request(self, requests: int) -> None:
        """Learning due after every learned request (`requests`: the open round's so far), on the decoding thread;
        its time counts in the round's `update_blocking_s`. Nothing for gradient learners (online/index_learning.py
        uses it)."""

    def _boundary_update(self) -> dict:
        """Learning that must happen on the decoding thread at each boundary, before the update and the snapshot;
        returns telemetry for the round record. Nothing for gradient learners (online/hybrid_session.py uses it)."""
        return {}

    def _positions(self, examples) -> int:
        """The round's training positions, for its record."""
        return sum(len(e.pred_index) for e in examples)

    def _draft_memory(self) -> dict[str, float] | None:
        """What the draft's learned state holds, for status (None: nothing beyond its parameters)."""
        return None

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
        for live, trained in zip(self._live, self._objective.parameters(), strict=True):
            live.copy_(trained)

    # --- persistence -----------------------------------------------------------------------------------------
    def _draft_tensors(self) -> dict[str, torch.Tensor]:
        """The draft's learned tensors by name, as saved in draft.safetensors (the learner's current values)."""
        return dict(zip(self._draft.trainable, self._objective.parameters(), strict=True))

    def _save(self, directory: str, warn: bool = True) -> None:
        self._last_saved_round = self._round
        self._write_snapshot(directory, self._draft_tensors(), self._learner_state(), self._info(), warn)

    def _learner_state(self) -> dict:
        """The learner's state, plus the replay buffer's requests when there is one (shared tensors: never
        modified once buffered, so a background write sees them as they were)."""
        state = self._learner.state_dict()
        if self._cfg.replay_positions:
            state["replay"] = self._replay.state_dict()
        return state

    def _info(self) -> dict:
        """state.json's description of the snapshot; with it the engine's acceptance rates (what the verify-cost
        rule learned about each source's proposals), so a restarted server cuts proposals as the one it replaces."""
        return {
            "round": self._round,
            "draft": self._draft.name,
            "config": _jsonable(asdict(self._cfg)),
            "acceptance": self._engine.acceptance.to_dict(),
        }

    def _save_in_background(self, directory: str) -> None:
        """Copy the state now (no update is in flight, so it is consistent) and write it in a thread; one write
        at a time. A write still running from the previous checkpoint is waited for first."""
        self._finish_saving()
        named = {n: p.detach().clone() for n, p in self._draft_tensors().items()}
        args = (directory, named, self._learner_state(), self._info())
        self._saver = threading.Thread(target=self._write_snapshot, args=args, daemon=True)
        self._saver.start()
        self._last_saved_round = self._round

    def _write_snapshot(self, directory: str, named: dict, learner_state: dict, info: dict, warn: bool = True) -> None:
        """Write one snapshot (atomically: a failed write leaves the previous one intact). A failure is counted
        and (with `warn`) logged in one line, and decoding goes on; `close()` raises if its final write fails."""
        try:
            save_state(directory, named, learner_state, info)
        except Exception as exc:  # disk full, permissions, a path taken by a file: counted, never swallowed
            self._checkpoint_failures += 1
            self._checkpoint_error = f"{type(exc).__name__}: {exc}"
            if not warn:
                return
            log.warning(
                "could not write the draft state of round %d to %s (%s); %s",
                info["round"],
                directory,
                self._checkpoint_error,
                _kept(self._last_good_round),
            )
            return
        self._checkpoints += 1
        self._last_good_round = int(info["round"])

    def _finish_saving(self) -> None:
        if self._saver is not None:
            self._saver.join()
            self._saver = None

    def _restore(self, directory: str) -> None:
        loaded = load_state(directory)
        if loaded is None:
            return
        tensors, learner_state, info = loaded
        self._load(tensors, learner_state, info, directory)
        if "acceptance" in info:  # snapshots written before the rates were saved start them afresh
            self._engine.acceptance.load_dict(info["acceptance"])
        self._round = int(info["round"])
        self._last_saved_round = self._last_good_round = self._round
        self._publish()

    def _load(self, tensors: dict[str, torch.Tensor], learner_state: dict, info: dict, directory: str) -> None:
        """Take over a snapshot's draft tensors and learner state; a UserError if it belongs to another draft."""
        if info.get("draft") != self._draft.name or set(tensors) != set(self._draft.trainable):
            raise UserError(
                f"draft state in '{directory}' was saved for draft '{info.get('draft')}', not '{self._draft.name}': "
                "use another --draft-state directory"
            )
        replay = learner_state.pop("replay", None)
        self._learner.load_state_dict(learner_state)
        if replay is not None and self._cfg.replay_positions:
            self._replay.load_state_dict(replay)


def _kept(round_no: int | None) -> str:
    if round_no is None:
        return "no snapshot of this run is on disk yet"
    return f"the last good snapshot (round {round_no}) is kept"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
