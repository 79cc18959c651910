"""EOS, stop strings and the token budget."""

from __future__ import annotations

from onlinespec.decoding.stopping import StopCriteria


class CharTokenizer:
    """A real (if minimal) tokenizer: token id i is the character chr(i); id 0 is a special token."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == 0))


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_eos_is_kept_in_ids_and_ends_the_request() -> None:
    stop = StopCriteria(100, frozenset({0}), tokenizer=CharTokenizer())
    assert stop.extend(ids("ab")) == ids("ab") and not stop.finished
    assert stop.extend([ord("c"), 0, ord("d")]) == [ord("c"), 0]
    assert stop.finish_reason == "eos" and stop.text() == "abc"


def test_budget_truncates_a_long_step() -> None:
    stop = StopCriteria(4, frozenset())
    stop.extend([1, 2, 3])
    assert stop.remaining == 1
    assert stop.extend([4, 5, 6]) == [4]
    assert stop.finish_reason == "length" and stop.token_ids == [1, 2, 3, 4]


def test_stop_string_across_steps_cuts_ids_and_text() -> None:
    stop = StopCriteria(100, frozenset(), ("\n\n",), CharTokenizer())
    stop.extend(ids("def f():\n"))
    assert not stop.finished
    kept = stop.extend(ids("\nxyz"))
    assert kept == ids("\n")
    assert stop.finish_reason == "stop"
    assert stop.token_ids == ids("def f():\n\n")
    assert stop.text() == "def f():"


def test_without_a_tokenizer_the_text_is_empty_and_eos_still_stops() -> None:
    stop = StopCriteria(10, frozenset({7}))
    assert stop.extend([1, 7, 2]) == [1, 7] and stop.finish_reason == "eos" and stop.text() == ""


def test_the_text_is_cut_at_the_earliest_of_several_stop_strings() -> None:
    stop = StopCriteria(100, frozenset(), ("yz", "c"), CharTokenizer())
    assert stop.extend(ids("abcxyz")) == ids("abc") and stop.text() == "ab"


def test_a_stop_string_completed_by_the_last_token_of_a_step() -> None:
    stop = StopCriteria(100, frozenset(), ("bc",), CharTokenizer())
    stop.extend(ids("a"))
    assert stop.extend(ids("bc")) == ids("bc") and stop.finish_reason == "stop" and stop.text() == "a"
