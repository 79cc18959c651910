"""Measurements of how fast this machine runs a model, cached on disk so each is made once.

A measurement (the verify-cost curve, the faster weight layout) holds for one model config, dtype, torch thread
count, CPU and torch version: those make its key, plus whatever the caller adds (`extra`). The CPU is its name AND
its signature (`cpu_signature`: vendor, family/model/stepping, cache size, core count and a digest of its feature
flags): cloud machines of different generations report the same name ("Intel(R) Xeon(R) Processor"), and a curve
measured on a Xeon without bf16 instructions was read back on one with AMX, where it was wrong by 1.5-2x at 2-5
tokens (docs/benchmarks.md). Files live under
`cache_dir/<kind>/<hash of the key>.json` and are written atomically (a temporary file of the writer's own, then
a rename), so processes measuring the same model at once (two servers starting, test workers) never clash.
`measurements_dir()` is where they go: `$ONLINESPEC_MEASUREMENTS`, else the model cache (the test suite points it
at a temporary folder, so the tiny random models it measures never fill the user's cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import torch

from onlinespec.atomic import write_text_atomic
from onlinespec.models.embedded import cache_root


def measurements_dir() -> Path:
    """`$ONLINESPEC_MEASUREMENTS` if set, else the model cache (`$ONLINESPEC_CACHE`, models/embedded.py)."""
    if os.environ.get("ONLINESPEC_MEASUREMENTS"):
        return Path(os.environ["ONLINESPEC_MEASUREMENTS"])
    return cache_root()


def machine_key(model: torch.nn.Module, extra: dict | None = None) -> dict:
    """What a speed measurement of `model` depends on."""
    return {
        "config": model.config.to_json_string(use_diff=False),
        "dtype": str(next(model.parameters()).dtype),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_signature": cpu_signature(),
        "torch": torch.__version__,
        **(extra or {}),
    }


def _path(cache_dir: Path, kind: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / kind / f"{digest}.json"


def read_measurement(cache_dir: Path, kind: str, model: torch.nn.Module, extra: dict | None = None) -> dict | None:
    """The saved measurement of `kind` for this key, or None when none was saved (or the file is unreadable)."""
    path = _path(cache_dir, kind, machine_key(model, extra))
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {**saved, "source": str(path)} if isinstance(saved, dict) else None


def write_measurement(
    cache_dir: Path, kind: str, model: torch.nn.Module, record: dict, extra: dict | None = None
) -> Path:
    """Save `record` as the measurement of `kind` for this key; returns its path."""
    key = machine_key(model, extra)
    path = _path(cache_dir, kind, key)
    write_text_atomic(path, json.dumps({**record, "key": {**key, "config": "(hashed)"}}))
    return path


def cpuinfo_fields(text: str | None = None) -> dict[str, str]:
    """The first value of each field of /proc/cpuinfo (`text`: its contents, read from the file when None); {}
    where it cannot be read (not Linux)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_signature() -> str:
    """What tells two CPUs of the same name apart: "vendor family/model/stepping, cache, N cpus, flags <sha256[:12]>"
    from /proc/cpuinfo (on other systems: the platform's processor string and the core count)."""
    fields = cpuinfo_fields()
    flags = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode()).hexdigest()[:12]
    identity = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    vendor = fields.get("vendor_id", platform.processor())
    return f"{vendor} {identity}, {fields.get('cache size', '?')}, {os.cpu_count()} cpus, flags {flags}"


def cpu_name() -> str:
    return cpuinfo_fields().get("model name") or platform.processor() or platform.machine()
