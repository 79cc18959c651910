"""Per-round checkpoint of a benchmark run, so an interrupted run continues without redoing finished rounds.

Layout under the run's output folder:

    checkpoint/progress.json        settings, prompts done, round records and every method's outputs so far
    checkpoint/state/<method>/      each learning method's draft and learner (the online state store's snapshots)

Order of writes at a round boundary: every learning session saves its snapshot `state-<round>` when its round ends
(the state store writes atomically and keeps the last 3), and only after all methods have decoded the round is
progress.json replaced (atomically). progress.json records the snapshot round of each method, and a resumed run
pins each method to exactly that snapshot, so a crash between the two writes never mixes rounds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from onlinespec.atomic import write_text_atomic
from onlinespec.dir_lock import DirectoryLock
from onlinespec.errors import UserError

FORMAT = 1


class Checkpoint:
    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.dir = self.out / "checkpoint"
        self.progress_path = self.dir / "progress.json"
        self._lock = None  # open file holding an exclusive lock while this process writes the run

    def start(self, key: dict, resume: bool) -> dict:
        """The progress to continue from: a fresh one, or (resume) the saved one after checking it was made with the
        same settings and prompts (`key`)."""
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out '{self.out}' is a file, not a folder")
        saved = self.load()
        if not resume and saved is None:
            self.acquire()
            return {
                "format": FORMAT,
                **key,
                "done": 0,
                "rounds": [],
                "outputs": {},
                "state_rounds": {},
                "elapsed_s": 0.0,
                "sessions": 0,
            }
        if not resume:
            raise UserError(
                f"'{self.out}' already holds a benchmark run: add --resume to continue it, or choose another --out"
            )
        if saved is None:
            raise UserError(
                f"nothing to resume in '{self.out}': it has no {self.progress_path.name}; run without --resume"
            )
        differences = _differences(saved, key)
        if differences:
            raise UserError(
                f"'{self.out}' was started with other settings ({'; '.join(differences)}): rerun with the same flags "
                "to resume it, or choose another --out"
            )
        self.acquire()
        return self.load()  # read again under the lock

    def acquire(self) -> None:
        """Own the run folder for this process (onlinespec/dir_lock.py), so two runs never write one checkpoint;
        released by release() or when the process ends, also when it crashes."""
        self._lock = DirectoryLock(self.out, "benchmark run").acquire()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def load(self) -> dict | None:
        if not self.progress_path.is_file():
            return None
        try:
            progress = json.loads(self.progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.progress_path} is unreadable ({exc}): delete '{self.dir}' to start over") from None
        if progress.get("format") != FORMAT:
            raise UserError(f"{self.progress_path} has an unknown format: delete '{self.dir}' to start over")
        return progress

    def save(self, progress: dict) -> None:
        write_text_atomic(self.progress_path, json.dumps(progress))

    def state_dir(self, method: str) -> Path:
        return self.dir / "state" / method

    def prepare_state(self, method: str, round_no: int) -> Path:
        """The state folder of `method`, made to load exactly snapshot `round_no` (0 = none: start fresh)."""
        directory = self.state_dir(method)
        if round_no == 0:
            shutil.rmtree(directory, ignore_errors=True)
            return directory
        snapshot = directory / f"state-{round_no:06d}"
        if not snapshot.is_dir():
            raise UserError(f"the checkpoint of '{method}' lacks {snapshot}: delete '{self.dir}' to start over")
        write_text_atomic(directory / "LATEST", snapshot.name)  # the state store loads the snapshot LATEST names
        return directory

    def drop_states(self) -> None:
        """After a finished run: the draft snapshots are large and no longer needed (progress.json stays)."""
        shutil.rmtree(self.dir / "state", ignore_errors=True)


def _differences(saved: dict, key: dict) -> list[str]:
    out = []
    for name, value in key.items():
        if name == "settings":
            for field in sorted(set(value) | set(saved.get("settings", {}))):
                old, new = saved.get("settings", {}).get(field), value.get(field)
                if old != new:
                    out.append(f"{field}: {json.dumps(old)} then, {json.dumps(new)} now")
        elif saved.get(name) != value:
            out.append(f"{name} differs")
    return out
