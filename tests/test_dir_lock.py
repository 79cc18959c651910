"""One owner per state directory: a second process is refused with who holds it; a killed owner leaves no stuck
lock; a directory that cannot be written is refused at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from onlinespec.dir_lock import DirectoryLock
from onlinespec.errors import UserError

HOLDER = """
import sys, time
from onlinespec.dir_lock import DirectoryLock
lock = DirectoryLock(sys.argv[1], "draft state").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def hold_in_other_process(path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_and_told_who_holds_it(tmp_path) -> None:
    holder = hold_in_other_process(tmp_path / "state")
    try:
        with pytest.raises(UserError, match=rf"draft state .* is in use by pid {holder.pid} on "):
            DirectoryLock(tmp_path / "state", "draft state").acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_owner_leaves_no_stuck_lock(tmp_path) -> None:
    holder = hold_in_other_process(tmp_path / "state")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with DirectoryLock(tmp_path / "state") as lock:
        assert lock.held


def test_a_second_owner_in_the_same_process_is_refused_until_release(tmp_path) -> None:
    first = DirectoryLock(tmp_path).acquire()
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        DirectoryLock(tmp_path).acquire()
    first.release()
    DirectoryLock(tmp_path).acquire().release()


def test_an_unwritable_directory_is_refused_at_once(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write the draft state .*a-file/state"):
        DirectoryLock(blocker / "state", "draft state").acquire()
    with pytest.raises(UserError, match="cannot write"):
        DirectoryLock("/proc/onlinespec-state").acquire()  # read-only even for root
