"""One owner at a time for a directory that a process keeps writing (a draft state, a bench run, a warm-up).

`DirectoryLock(path)` takes an exclusive advisory lock (`flock`) on `path/.onlinespec.lock` and writes its owner
(pid, host, command, start time) into it. The kernel drops the lock when its owner's file descriptor closes, so a
process that crashed or was killed never leaves it stuck: the next owner simply gets it. A second owner, in another
process or in the same one, is refused with a `UserError` that says who holds the directory. Opening the lock file
also proves, at start-up, that the directory can be written; one that cannot is refused then, not a round later.
Advisory locks hold on local file systems; on network file systems they depend on the server.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from onlinespec.errors import UserError

LOCK_NAME = ".onlinespec.lock"


class DirectoryLock:
    """Hold `path` for this process: `with DirectoryLock(path, "draft state"):` or `acquire()` / `release()`."""

    def __init__(self, path: str | Path, what: str = "directory") -> None:
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        lock_file = self.path / LOCK_NAME
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(
                f"cannot write the {self.what} '{self.path}': {exc.strerror or exc}. Choose a directory this process "
                "can write to"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise UserError(
                f"the {self.what} '{self.path}' is in use by {owner}: two processes must not share it. Stop that "
                "process first, or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_me()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the directory up (closing the descriptor drops the lock; the file stays, harmless)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _me() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([_program(), *sys.argv[1:]])[:200],
        "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()),
    }


def _program() -> str:
    """The name a user typed: `python -m onlinespec` runs as .../onlinespec/__main__.py."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return "onlinespec" if name == "__main__.py" else name


def _read_owner(fd: int) -> str:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {owner['pid']} on {owner['host']} ('{owner['command']}', since {owner['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
