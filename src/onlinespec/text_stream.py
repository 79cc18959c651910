"""Incremental detokenisation: turn a growing list of token ids into text pieces safe to show right away."""

from __future__ import annotations


class TextStream:
    """Feed it the generated ids step by step; it returns only text that can no longer change.

    Text is held back while it ends in an incomplete UTF-8 sequence ("\ufffd") or in a prefix of a stop string
    (which may yet turn out to be the stop string, never to be shown), and nothing from the first complete stop
    string on is ever returned: one verify step can accept several tokens that complete a stop string at once, so
    the ids pushed may run past it. Pieces joined + `finish(final_text)` == the non-streamed text, always.
    """

    def __init__(self, tokenizer, stop_strings: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = stop_strings
        self.shown = 0  # characters of the decoded text already returned

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, all_ids: list[int]) -> str:
        """all_ids: every id generated so far. Returns the new text that is final."""
        text = self._decode(all_ids)
        end = min([len(text), *(i for i in map(text.find, self.stop_strings) if i >= 0)])
        if text[:end].endswith("\ufffd"):
            end = len(text[:end].rstrip("\ufffd"))
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, end), 0, -1):  # longest tail that could start a stop string
                if text[end - size : end] == stop[:size]:
                    end -= size
                    break
        piece = text[self.shown : end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return piece

    def finish(self, final_text: str) -> str:
        """The rest of the final text (after stop-string cutting) not yet returned."""
        piece = final_text[self.shown :]
        self.shown = len(final_text)
        return piece
