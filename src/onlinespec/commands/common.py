"""What the commands share besides flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars before a command loads a model."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextmanager
def owned_directory(path: str | None, what: str) -> Iterator[None]:
    """Hold `path` for the whole command (onlinespec/dir_lock.py), or nothing when `path` is None. Taken before
    any model loads: a directory another process owns, or one that cannot be written, is refused at once."""
    if not path:
        yield
        return
    from onlinespec.dir_lock import DirectoryLock

    with DirectoryLock(path, what):
        yield


def config_from_args(cls: type[T], args: argparse.Namespace, **values: Any) -> T:
    """`cls(...)` (a dataclass config) from the flags named like its fields; `values` give the fields whose flag
    has another name or needs converting. Fields with neither keep their defaults."""
    named = {f.name: getattr(args, f.name) for f in fields(cls) if f.init and hasattr(args, f.name)}
    return cls(**{**named, **values})
