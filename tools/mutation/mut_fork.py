"""Run a function in a forked child with a wall-clock limit, its output in a log file, and its process group
killed afterwards (tests may start servers).

The parent imports torch, transformers and pytest once (see `preload`) and never onlinespec, so each child pays
no import time for the heavy libraries yet imports onlinespec (the mutant) fresh from the temporary copy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

# Heavy third-party modules the tests import; loading them before forking saves seconds per mutant.
PRELOAD = (
    "numpy",
    "torch",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "pytest",
    "hypothesis",
    "scipy.stats",
    "httpx",
    "fastapi",
    "safetensors.torch",
)


def preload() -> None:
    """Import PRELOAD and pytest's plugins (whatever is installed) in the parent, then freeze the garbage
    collector's view of them (a child's gc.collect then skips them: pytest collects 5 times at exit, which took
    seconds per mutant). Refuses if onlinespec is already imported."""
    import gc
    import importlib
    import importlib.metadata

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for entry in importlib.metadata.entry_points(group="pytest11"):
        with contextlib.suppress(Exception):
            entry.load()
    gc.collect()
    gc.freeze()
    if any(m == "onlinespec" or m.startswith("onlinespec.") for m in sys.modules):
        raise RuntimeError("onlinespec was imported before forking: children would not see the mutant")


def run_forked(target: Callable[[], int], timeout_s: float, log_path: Path) -> tuple[str, int]:
    """-> ("exit", exit code) | ("timeout", -1) | ("signal", signal number)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 70
        try:
            os.setpgid(0, 0)
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = target()
        except BaseException:  # noqa: BLE001  (anything: report it in the log, exit non-zero)
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    with contextlib.suppress(OSError):  # the child may have done it already (or exited)
        os.setpgid(pid, pid)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                _kill_group(pid)
                os.waitpid(pid, 0)
                return "timeout", -1
            time.sleep(0.05)
    finally:
        _kill_group(pid)  # stragglers the tests started
    if os.WIFEXITED(status):
        return "exit", os.WEXITSTATUS(status)
    return "signal", os.WTERMSIG(status)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
