"""When a request ends: end-of-sequence tokens, stop strings, or the new-token budget."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StopCriteria:
    """Accumulates emitted token ids and decides when and where generation stops.

    An EOS token is kept in `token_ids` (as transformers does) but not in the text. A stop string ends the
    request at the first token that completes it; the text is cut before the stop string.
    """

    max_new_tokens: int
    eos_ids: frozenset[int]
    stop_strings: tuple[str, ...] = ()
    tokenizer: object | None = None  # needed only for stop strings
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "eos" | "stop" | "length" once finished

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.token_ids)

    def extend(self, new_ids: list[int]) -> list[int]:
        """Append `new_ids` up to the first stop condition; return the ids actually kept."""
        before = len(self.token_ids)
        kept = new_ids[: self.remaining]
        for i, tok in enumerate(kept):
            if tok in self.eos_ids:
                kept, self.finish_reason = kept[: i + 1], "eos"
                break
        self.token_ids.extend(kept)
        if self.stop_strings and self._cut_at_stop_string(before):
            self.finish_reason = "stop"
        if self.finish_reason is None and not self.remaining:
            self.finish_reason = "length"
        return self.token_ids[before:]

    def _cut_at_stop_string(self, before: int) -> bool:
        if not any(s in self._decode(self.token_ids) for s in self.stop_strings):
            return False
        for n in range(before + 1, len(self.token_ids) + 1):  # the shortest prefix that completes a stop string
            if any(s in self._decode(self.token_ids[:n]) for s in self.stop_strings):
                del self.token_ids[n:]
                return True
        return False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def text(self) -> str:
        """The generated text: special tokens dropped, cut before the first stop string."""
        text = self._decode(self.token_ids) if self.tokenizer is not None else ""
        cuts = [text.find(s) for s in self.stop_strings if s in text]
        return text[: min(cuts)] if cuts else text
