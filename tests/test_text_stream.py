"""Streaming text equals the non-streamed text for every stop string and every way of splitting the tokens into
verify steps (one step may accept several tokens that complete a stop string at once)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_stopping import CharTokenizer, ids

from onlinespec.decoding.stopping import StopCriteria
from onlinespec.text_stream import TextStream


def stream_and_plain(text: str, steps: list[int], stops: tuple[str, ...]) -> tuple[str, str, str]:
    """Feed `text` (one token per character) in steps of the given sizes, as the engine and server do; return
    (the streamed pieces joined, the non-streamed text, the finish reason)."""
    tokenizer = CharTokenizer()
    stop = StopCriteria(len(text), frozenset(), stops, tokenizer)
    stream = TextStream(tokenizer, stops)
    pieces, tokens, start = [], ids(text), 0
    for size in steps:
        if stop.finished or start >= len(tokens):
            break
        stop.extend(tokens[start : start + size])
        start += size
        pieces.append(stream.push(stop.token_ids))
    plain = stop.text()
    pieces.append(stream.finish(plain))
    return "".join(pieces), plain, stop.finish_reason or "length"


def test_a_multi_token_step_that_completes_the_stop_string_leaks_nothing() -> None:
    # the reported case: " Pari" streamed, then one step accepts "s." which completes the stop string "s."
    streamed, plain, reason = stream_and_plain(" Paris. It is", [5, 3, 3, 3], ("s.",))
    assert (streamed, plain, reason) == (" Pari", " Pari", "stop")
    # "P" completed inside the first step: nothing of " Paris" may be shown but the space
    streamed, plain, reason = stream_and_plain(" Paris", [6], ("P",))
    assert (streamed, plain, reason) == (" ", " ", "stop")


def test_text_held_back_as_a_stop_prefix_is_released_when_no_stop_follows() -> None:
    streamed, plain, reason = stream_and_plain("a s b", [2, 1, 2], ("s.",))
    assert (streamed, plain, reason) == ("a s b", "a s b", "length")


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(alphabet="ab. \n", min_size=1, max_size=30),
    steps=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=30),
    stops=st.lists(st.text(alphabet="ab. \n", min_size=1, max_size=4), max_size=3).map(tuple),
)
def test_streamed_text_equals_non_streamed_text(text: str, steps: list[int], stops: tuple[str, ...]) -> None:
    steps = steps + [len(text)]  # whatever the steps leave is emitted in one last step
    streamed, plain, _ = stream_and_plain(text, steps, stops)
    assert streamed == plain
