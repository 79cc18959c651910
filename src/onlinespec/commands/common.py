"""What the commands share besides flags."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


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
