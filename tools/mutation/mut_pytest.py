"""The child side: run pytest in-process on the temporary copy, recording either a line map or the first failure.

LineMap (the map run, unmutated code): per test, which lines of the mutated files ran, and how long it took.
Recorder (one mutant): runs the given tests in the given order and notes the first failing one.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest


class LineMap:
    """Traces line events in `files` (absolute paths) during each test's setup, call and teardown."""

    def __init__(self, files: set[str]) -> None:
        self.files = files
        self.lines: dict[str, dict[str, list[int]]] = {}
        self.durations: dict[str, float] = {}
        self.failed: list[str] = []
        self._hits: dict[str, set[int]] = defaultdict(set)

    def _global(self, frame, event, arg):
        if frame.f_code.co_filename in self.files:
            return self._local
        return None

    def _local(self, frame, event, arg):
        if event == "line":
            self._hits[frame.f_code.co_filename].add(frame.f_lineno)
        return self._local

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self._hits = defaultdict(set)
        tic = time.perf_counter()
        sys.settrace(self._global)
        threading.settrace(self._global)
        yield
        sys.settrace(None)
        threading.settrace(None)
        self.durations[item.nodeid] = time.perf_counter() - tic
        self.lines[item.nodeid] = {f: sorted(h) for f, h in self._hits.items()}

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed and report.nodeid not in self.failed:
            self.failed.append(report.nodeid)


class Recorder:
    """Orders the collected tests as given (fastest first) and records the first failure."""

    def __init__(self, order: list[str]) -> None:
        self.rank = {nodeid: i for i, nodeid in enumerate(order)}
        self.first_failure: str | None = None
        self.message = ""
        self.ran = 0

    def pytest_collection_modifyitems(self, items) -> None:
        items.sort(key=lambda item: self.rank.get(item.nodeid, len(self.rank)))

    def pytest_collectreport(self, report) -> None:  # a test module that no longer imports
        self.pytest_runtest_logreport(report)

    def pytest_runtest_logreport(self, report) -> None:
        if getattr(report, "when", None) == "call":
            self.ran += 1
        if report.failed and self.first_failure is None:
            self.first_failure = report.nodeid
            crash = getattr(report.longrepr, "reprcrash", None)
            self.message = (crash.message if crash is not None else str(report.longrepr))[-300:]


def _prepare(root: Path) -> None:
    """Import onlinespec from the copy (also in subprocesses the tests start), one torch thread, and
    deterministic hypothesis runs without an example database (mutants stay independent and repeatable).

    Bytecode caches may be written: the copy's src/ was compiled with hash-checked .pyc files (see
    `precompile`), which stay hash-checked when rewritten, so a mutant and the original never share a stale cache
    (mtime-based caches could: same size, same second); pytest's rewritten test modules never change."""
    sys.dont_write_bytecode = False
    src = str(root / "src")
    sys.path.insert(0, src)
    os.environ["PYTHONPATH"] = src
    os.environ["OMP_NUM_THREADS"] = "1"
    os.chdir(root)
    import torch
    from hypothesis import settings

    torch.set_num_threads(1)
    settings.register_profile("mutation", derandomize=True, database=None)
    settings.load_profile("mutation")


def precompile(src: Path) -> None:
    """Compile `src` with .pyc files validated by the source's hash, not its mtime (see `_prepare`)."""
    import compileall
    import py_compile

    compileall.compile_dir(src, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)


def _args(root: Path) -> list[str]:
    return ["-q", "-p", "no:cacheprovider", "--rootdir", str(root), "-o", "addopts=", "-W", "ignore"]


def map_lines(root: Path, test_files: list[str], files: set[str], out: Path) -> int:
    """The map run: every test of `test_files` once, unmutated; writes {lines, durations, failed} to `out`."""
    _prepare(root)
    plugin = LineMap(files)
    code = pytest.main([*_args(root), *test_files], plugins=[plugin])
    out.write_text(json.dumps({"lines": plugin.lines, "durations": plugin.durations, "failed": plugin.failed}))
    return int(code)


def run_tests(root: Path, nodeids: list[str], out: Path) -> int:
    """One mutant: `nodeids` in order with -x; writes {first_failure, message, ran} to `out`."""
    _prepare(root)
    plugin = Recorder(nodeids)
    code = pytest.main([*_args(root), "-x", *nodeids], plugins=[plugin])
    imported = getattr(sys.modules.get("onlinespec"), "__file__", None) or str(root)
    if not imported.startswith(str(root)):
        raise RuntimeError(f"onlinespec was imported from {imported}, not the mutated copy")
    out.write_text(json.dumps({"first_failure": plugin.first_failure, "message": plugin.message, "ran": plugin.ran}))
    return int(code)
