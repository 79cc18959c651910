"""The round loop for drafts that learn without gradients (online/counting_draft.py: the lookup draft).

Same surface and bookkeeping as `OnlineLearning` (rounds, records, `private()`, snapshots, `status()`, `close()`);
only the hooks differ:
- feedback: each learned request's committed tokens (online/committed_text.py), nothing else;
- update: `draft.learn(requests)` after every `index_every` learned requests (online/index_learning.py; default
  every request) and at the round boundary for what is left, on the caller's thread whatever the schedule says. It
  is a few dict inserts per token (milliseconds), and proposals read the index it writes: a background thread
  would race with them. Nothing to publish: the draft is changed in place, between requests only;
- drafts: the lookup draft, and the hybrid draft under learner `count` (its index learns, its head stays frozen);
- learner: `static` freezes the draft (a restored index is used, nothing is added); any other name counts (the
  session reports it as `count`), so `serve`'s default learner just works with `--draft lookup`;
- snapshot: the draft's `state_tensors()` in draft.safetensors, its description in state.json under "counting";
  restoring checks that description (vocabulary, tokenizer, n-gram orders) and the tensors, and refuses a
  mismatch with a UserError naming the directory. Building the tensors runs on the decoding thread (also with
  --save-in-background, which then only moves the file writing off it) and costs O(entries): measured 1.3-1.7 s
  for a full 200,000-entry index on the project's 2-core machine while it was shared with other runs (loading
  it back: 2.4-3.5 s). `--checkpoint-every N` pays it every N rounds.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.errors import UserError
from onlinespec.online.committed_text import CommittedText
from onlinespec.online.counting_draft import COUNT, CountingDraft
from onlinespec.online.index_learning import IndexLearning
from onlinespec.online.session import OnlineConfig, OnlineLearning

INDEX_PREFIX = "index."  # a hybrid state's index tensors in draft.safetensors (the head's are its parameter names)


class CountingLearning(IndexLearning, OnlineLearning):
    """A learning session for a `CountingDraft`: `Pipeline.enable_learning` picks it for such a draft."""

    def __init__(self, engine: SpeculativeEngine, cfg: OnlineConfig) -> None:
        if not isinstance(engine.draft, CountingDraft):
            raise UserError(f"draft '{getattr(engine.draft, 'name', engine.draft)}' does not learn by counting")
        learner = "static" if cfg.learner == "static" else COUNT
        super().__init__(engine, replace(cfg, learner=learner, schedule="sync"))

    def _attach(self, draft: CountingDraft) -> CommittedText:
        self._committed, self._index_round, self._round_tokens = CommittedText(self._cfg.max_positions), {}, 0
        return self._committed

    def _update(self, examples: list[torch.Tensor]) -> dict:
        """`examples`: the requests not learned yet (none when the index learns after every request)."""
        telemetry = self._take_index_round(examples)
        self._round_tokens = telemetry.get("index_learned_tokens", 0)
        return {**telemetry, "update_s": telemetry.get("index_update_s", 0.0)}

    def _publish(self) -> None:
        """Nothing: `learn` changed the live draft already (at the boundary, between requests)."""

    def _positions(self, examples: list[torch.Tensor]) -> int:
        """The round's learned tokens (most were learned as their requests ended, before the boundary)."""
        return self._round_tokens

    def _draft_memory(self) -> dict[str, float]:
        return self._draft.memory()

    def _draft_tensors(self) -> dict[str, torch.Tensor]:
        return self._draft.state_tensors()

    def _learner_state(self) -> dict:
        return {}

    def _info(self) -> dict:
        return {**super()._info(), "counting": self._draft.describe()}

    def _load(self, tensors: dict[str, torch.Tensor], learner_state: dict, info: dict, directory: str) -> None:
        if "counting" not in info:
            raise UserError(
                f"draft state in '{directory}' was saved for draft '{info.get('draft')}', which does not learn by "
                f"counting, not for '{self._draft.name}': use another --draft-state directory"
            )
        if any(name.startswith(INDEX_PREFIX) for name in tensors):
            raise UserError(
                f"draft state in '{directory}' holds a trained head as well as the index (saved by learner "
                f"'{info.get('config', {}).get('learner')}'): resume it with that learner, or use another "
                "--draft-state directory"
            )
        load_counting_state(self._draft, tensors, info["counting"], directory)


def load_counting_state(draft: CountingDraft, tensors: dict[str, torch.Tensor], info: dict, directory: str) -> None:
    """`draft.load_state`, its ValueError (another tokenizer, layout, bad tensors) turned into one UserError line."""
    try:
        draft.load_state(tensors, info)
    except ValueError as exc:
        raise UserError(
            f"cannot use the draft state in '{directory}' for draft '{draft.name}': {exc}. Use another "
            "--draft-state directory (or delete this one to start from an empty index)"
        ) from None
