"""Crash-safe persistence of an evolving draft and its learner (safetensors + JSON, checksummed).

Layout of a state directory:

    DIR/LATEST                 name of the newest complete snapshot (replaced atomically)
    DIR/state-000012/          one snapshot: draft.safetensors (trainable draft tensors by name),
                               learner.safetensors (the learner's tensors), state.json (learner skeleton,
                               config, round), manifest.json (sha256 of the three files)

A snapshot is written into a temporary directory, every file fsync'ed, then renamed into place, and only then is
LATEST replaced (temp file + fsync + rename). A crash at any moment therefore leaves LATEST naming a complete
snapshot. Loading verifies the checksums and falls back to the newest older snapshot that verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from onlinespec.errors import UserError

KEEP_SNAPSHOTS = 3
FILES = ("draft.safetensors", "learner.safetensors", "state.json")


def _split_tensors(obj, prefix: str, tensors: dict[str, torch.Tensor]):
    """Replace every tensor in a nested dict/list by {"__tensor__": key}, collecting it in `tensors`."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {k: _split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_state(directory: str | Path, draft_tensors: dict[str, torch.Tensor], learner_state: dict, info: dict) -> Path:
    """Write one snapshot atomically; returns its path. `info` must be JSON-serialisable (config, round, ...)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    learner_tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(learner_state, "learner", learner_tensors)
    round_no = int(info.get("round", 0))
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=root))
    save_file({k: v.detach().contiguous().clone() for k, v in draft_tensors.items()}, tmp / FILES[0])
    save_file(learner_tensors, tmp / FILES[1])
    (tmp / FILES[2]).write_text(json.dumps({"info": info, "learner": skeleton}))
    (tmp / "manifest.json").write_text(json.dumps({name: _sha256(tmp / name) for name in FILES}))
    for name in (*FILES, "manifest.json"):
        _fsync(tmp / name)
    final = root / f"state-{round_no:06d}"
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(root)
    pointer = root / ".LATEST.tmp"
    pointer.write_text(final.name)
    _fsync(pointer)
    os.replace(pointer, root / "LATEST")
    _fsync(root)
    _prune(root, keep=final.name)
    return final


def _prune(root: Path, keep: str) -> None:
    snapshots = sorted(p for p in root.glob("state-*") if p.is_dir())
    for old in snapshots[:-KEEP_SNAPSHOTS]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".writing-*"):  # left by a writer that died mid-snapshot
        shutil.rmtree(stale, ignore_errors=True)


def _verified(snapshot: Path) -> bool:
    try:
        manifest = json.loads((snapshot / "manifest.json").read_text())
        return all(_sha256(snapshot / name) == manifest[name] for name in FILES)
    except (OSError, ValueError, KeyError):
        return False


def load_state(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict] | None:
    """Return (draft tensors, learner state, info) of the newest snapshot that verifies; None if there is none."""
    root = Path(directory)
    if not root.exists():
        return None
    if root.exists() and not root.is_dir():
        raise UserError(f"draft state '{directory}' is a file, not a directory")
    candidates = sorted((p for p in root.glob("state-*") if p.is_dir()), reverse=True)
    latest = root / "LATEST"
    if latest.is_file() and (root / latest.read_text().strip()).is_dir():
        named = root / latest.read_text().strip()
        candidates = [named, *[c for c in candidates if c != named]]
    for snapshot in candidates:
        if _verified(snapshot):
            if snapshot != candidates[0]:
                print(
                    f"onlinespec: state {candidates[0].name} is corrupt or incomplete; using {snapshot.name}",
                    file=sys.stderr,
                )
            state = json.loads((snapshot / FILES[2]).read_text())
            learner = _join_tensors(state["learner"], load_file(snapshot / FILES[1]))
            return load_file(snapshot / FILES[0]), learner, state["info"]
        print(f"onlinespec: skipping corrupt draft state {snapshot}", file=sys.stderr)
    if candidates:
        raise UserError(f"no readable draft state in '{directory}': every snapshot failed its checksum")
    return None
