"""Text in, text out: a target, an optional draft, the tokenizer and the engine wired together.

from onlinespec import Pipeline, GenerationConfig
pipe = Pipeline.load()                       # embedded smollm2-135m target, default draft
result = pipe.generate("Write a haiku", GenerationConfig(max_new_tokens=64))
print(result.text, result.stats.tau)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from onlinespec.decoding.autoregressive import autoregressive_stream
from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.draft import Draft
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.decoding.verify_cost import VERIFY_COST_MODES, VerifyCost, cached_verify_cost
from onlinespec.drafts import DEFAULT_DRAFT, make_draft
from onlinespec.errors import UserError
from onlinespec.models import DEFAULT_MODEL, LoadedModel, load_model
from onlinespec.models.machine_cache import measurements_dir
from onlinespec.prompting import encode_prompt

if TYPE_CHECKING:
    from onlinespec.online.session import OnlineConfig, OnlineLearning

MODES = ("spec", "ar")


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "eos" | "stop" | "length"
    stats: RequestStats

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "stats": self.stats.to_dict(),
        }


class Generation:
    """One request in flight: iterate it for the new token ids of each step; `result()` once it is done.

    `on_done(stats)` (the online learner's `after_request`) runs once, from `finish()`, which `result()` calls.
    """

    def __init__(
        self,
        steps: Iterator[list[int]],
        stop: StopCriteria,
        stats: RequestStats,
        on_done: Callable[[RequestStats], dict | None] | None = None,
    ) -> None:
        self._steps, self.stop, self.stats, self._on_done = steps, stop, stats, on_done
        self._record: dict | None = None

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._steps

    def finish(self) -> dict | None:
        """Hand the request's stats to the learner, once: its round record if this request ended a round, else
        None (later calls return the same). A consumer that stops iterating early calls it itself: the verify
        steps that ran are exact feedback, so an aborted request still counts."""
        if self._on_done is not None:
            on_done, self._on_done = self._on_done, None
            self._record = on_done(self.stats)
        return self._record

    def result(self) -> GenerationResult:
        for _ in self:  # finish whatever the caller did not consume
            pass
        self.finish()
        return GenerationResult(
            self.stop.text(), list(self.stop.token_ids), self.stop.finish_reason or "length", self.stats
        )


class Pipeline:
    def __init__(self, target: LoadedModel, draft: Draft | None) -> None:
        self.target = target
        self.tokenizer = target.tokenizer
        self.draft = draft
        self.engine = SpeculativeEngine(target.model, draft) if draft is not None else None
        self.online: OnlineLearning | None = None  # the learner session, once enable_learning() attached it
        self.eos_ids = _eos_ids(target)
        self.context_length = getattr(target.model.config, "max_position_embeddings", None)

    @classmethod
    def load(
        cls,
        target: str = DEFAULT_MODEL,
        draft: str = DEFAULT_DRAFT,
        dtype: str = "auto",
        verify_cost: str = "auto",
        weight_layout: str = "auto",
        attention: str = "auto",
    ) -> Pipeline:
        """Load `target` in `dtype` (default: the faster of float32 and bfloat16 on this machine,
        models/dtype_choice.py), its linear weights in `weight_layout` (models/weight_layout.py; default: the faster
        here), its attention by `attention` (models/attention.py; default: folded where faster here), and build
        `draft` for it in the same dtype; `verify_cost` as in `use_verify_cost` (default: measured)."""
        loaded = load_model(target, dtype, weight_layout, attention)
        pipe = cls(loaded, make_draft(draft, loaded))  # the draft in the target's dtype
        pipe.use_verify_cost(verify_cost)
        return pipe

    def use_verify_cost(self, mode: str | VerifyCost | None) -> VerifyCost | None:
        """How many drafted tokens each verify step takes (decoding/verify_cost.py): "auto" cuts each proposal
        to the length worth this machine's measured verify cost (measured once per model, dtype, thread count and
        CPU, cached under the model cache directory); "off" or None verifies every drafted token; a VerifyCost is
        used as given. Returns the curve in use."""
        if mode not in (*VERIFY_COST_MODES, None) and not isinstance(mode, VerifyCost):
            raise UserError(f"unknown verify-cost mode '{mode}': choose one of {', '.join(VERIFY_COST_MODES)}")
        if self.engine is None:
            return None  # no draft: nothing to verify
        if mode == "auto":
            mode = cached_verify_cost(self.target.model, measurements_dir())
        self.engine.verify_cost = mode if isinstance(mode, VerifyCost) else None
        return self.engine.verify_cost

    def enable_learning(self, cfg: OnlineConfig) -> OnlineLearning:
        """Let the draft learn online from this pipeline's speculative requests: THE way to attach a learner
        session (generate, bench and serve all use it). Each learned request's stats reach the session through
        `Generation.finish()` (which `result()` calls); returns the session, for `status()` and `close()`."""
        from onlinespec.online.counting_draft import COUNT, CountingDraft
        from onlinespec.online.counting_session import CountingLearning
        from onlinespec.online.hybrid_session import HybridLearning
        from onlinespec.online.session import OnlineLearning
        from onlinespec.online.trainable_draft import TrainableDraft

        if self.engine is None:
            raise UserError("online learning needs a draft: pass --draft (e.g. layerskip:4), not none")
        # A draft that learns by counting (the lookup draft) gets the session without gradients; one that learns
        # both ways (the hybrid draft: a head and an n-gram index) the session that does both, unless its learner
        # is `count`: then only its index learns (no gradient, milliseconds a round) and its head stays frozen.
        draft = self.engine.draft
        if isinstance(draft, CountingDraft):
            both = isinstance(draft, TrainableDraft) and cfg.learner != COUNT
            session = HybridLearning if both else CountingLearning
        else:
            session = OnlineLearning
        self.online = session(self.engine, cfg)
        return self.online

    def encode(self, prompt: str, chat: bool = True) -> torch.Tensor:
        """Prompt text -> LongTensor [T], wrapped in the chat template when the tokenizer has one and chat=True."""
        if not prompt or not prompt.strip():
            raise UserError("the prompt is empty: give some text to continue")
        return encode_prompt(self.tokenizer, prompt, chat)

    def start(
        self, prompt_ids: torch.Tensor, cfg: GenerationConfig, mode: str = "spec", learn: bool = True
    ) -> Generation:
        """Begin decoding prompt_ids (LongTensor [T]); `mode` is "spec" (needs a draft) or "ar". With a learner
        attached, a speculative request is learned from unless `learn` is False (a private request: its feedback
        is not buffered and its stats are not counted)."""
        if mode not in MODES:
            raise UserError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")
        if prompt_ids.numel() == 0:
            raise UserError("the prompt is empty: give some text to continue")
        cfg = self._fit_context(prompt_ids, cfg)
        stop = StopCriteria(cfg.max_new_tokens, self.eos_ids, cfg.stop, self.tokenizer)
        stats = RequestStats()
        if mode == "spec" and self.engine is not None:
            steps = self.engine.stream(prompt_ids, cfg, stop, stats)
            if self.online is None:
                return Generation(steps, stop, stats)
            if not learn:
                return Generation(_private(self.online, steps), stop, stats)
            return Generation(steps, stop, stats, self.online.after_request)
        return Generation(autoregressive_stream(self.target.model, prompt_ids, cfg, stop, stats), stop, stats)

    def generate(
        self, prompt: str, cfg: GenerationConfig | None = None, chat: bool = True, mode: str = "spec"
    ) -> GenerationResult:
        return self.start(self.encode(prompt, chat), cfg or GenerationConfig(), mode).result()

    def _fit_context(self, prompt_ids: torch.Tensor, cfg: GenerationConfig) -> GenerationConfig:
        if self.context_length is None:
            return cfg
        room = self.context_length - prompt_ids.shape[0]
        if room < 1:
            raise UserError(
                f"the prompt has {prompt_ids.shape[0]} tokens but the model's context is {self.context_length}: "
                "shorten the prompt"
            )
        return replace(cfg, max_new_tokens=room) if cfg.max_new_tokens > room else cfg


def _private(online: OnlineLearning, steps: Iterator[list[int]]) -> Iterator[list[int]]:
    """The steps, decoded inside the session's private() block (left when they end or are closed)."""
    with online.private():
        yield from steps


def _eos_ids(target: LoadedModel) -> frozenset[int]:
    """End-of-sequence ids from the generation config and the tokenizer."""
    ids: set[int] = set()
    configured = getattr(target.model.generation_config, "eos_token_id", None)
    if configured is not None:
        ids.update(configured if isinstance(configured, list) else [configured])
    if getattr(target.tokenizer, "eos_token_id", None) is not None:
        ids.add(target.tokenizer.eos_token_id)
    return frozenset(ids)
