"""Plant each of issue 17's eight single-line bugs, one at a time, in a copy of the code; check a test catches it.

    python3 tools/planted_bugs.py              # all eight (about 10 minutes on 2 cores)
    python3 tools/planted_bugs.py --only stop-ignored --only alpha-power

Each bug is a text substitution in one file of a temporary copy of src/ and tests/ (it must match exactly as often
as stated, so a refactor that moves the line shows up as "plant not found", never as a silent pass). The unplanted
copy must pass the named tests first; then every planted copy must fail at least one of them. Tests import the copy
(PYTHONPATH), servers the tests start too (they run `python -m onlinespec` with the same environment).
Exit status 0 when every bug was caught, 1 otherwise. Not run in CI (it re-runs server tests eight times).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plant:
    name: str
    what: str
    file: str  # relative to src/onlinespec
    old: str
    new: str
    count: int  # how many times `old` occurs (all are replaced)
    tests: tuple[str, ...]


PLANTS = (
    Plant(
        "features-shifted",
        "the engine hands the draft the target features one position back",
        "decoding/engine.py",
        "self.features[length - 1 : length + n]",
        "self.features[max(length - 2, 0) : length - 1 + n]",
        2,
        ("tests/test_eagle_alignment.py",),
    ),
    Plant(
        "eagle-pairs-x_t",
        "the EAGLE head pairs feature f_t with token x_t instead of x_{t+1}",
        "drafts/eagle.py",
        "self.pending[None], ids[t + 1][None]",
        "self.pending[None], ids[t][None]",
        1,
        ("tests/test_eagle_alignment.py",),
    ),
    Plant(
        "stop-ignored",
        "the server ignores `stop` (still validated, never applied)",
        "serve/schemas.py",
        "stop=_stop(body),",
        "stop=(_stop(body), ())[1],",
        1,
        ("tests/test_serve_stop.py", "tests/test_serve_finish.py"),
    ),
    Plant(
        "stream-shows-stop-prefix",
        "streaming no longer holds back a possible stop-string prefix",
        "text_stream.py",
        "for stop in self.stop_strings:\n            for size in",
        "for stop in ():\n            for size in",
        1,
        ("tests/test_serve_stop.py", "tests/test_text_stream.py"),
    ),
    Plant(
        "finish-always-length",
        "finish_reason reported as 'length' for a stop string or an EOS",
        "serve/responses.py",
        'FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}',
        'FINISH_REASONS = {"eos": "length", "stop": "length", "length": "length"}',
        1,
        ("tests/test_serve_finish.py",),
    ),
    Plant(
        "private-learned",
        "a private request (X-OnlineSpec-No-Learn) is decoded and learned from like any other",
        "pipeline.py",
        "            if not learn:\n",
        "            if False:\n",
        1,
        ("tests/test_serve_finish.py",),
    ),
    Plant(
        "divergence-none",
        "`first_divergence` always returns None",
        "bench/results.py",
        '(or where the shorter ends); None if equal."""\n',
        '(or where the shorter ends); None if equal."""\n    return None\n',
        1,
        ("tests/test_bench_arithmetic.py",),
    ),
    Plant(
        "alpha-power",
        "`ideal_speedup` with alpha^k instead of alpha^(k+1)",
        "bench/results.py",
        "(1 - alpha ** (k + 1)) / (1 - alpha)",
        "(1 - alpha**k) / (1 - alpha)",
        1,
        ("tests/test_bench_arithmetic.py",),
    ),
)


def make_copy() -> Path:
    """src/, tests/ and pyproject.toml in a fresh temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="onlinespec-plant-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis")
    for name in ("src", "tests"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def plant(root: Path, bug: Plant) -> None:
    path = root / "src" / "onlinespec" / bug.file
    text = path.read_text()
    found = text.count(bug.old)
    if found != bug.count:
        sys.exit(f"{bug.name}: expected {bug.count} occurrence(s) of {bug.old!r} in {bug.file}, found {found}")
    path.write_text(text.replace(bug.old, bug.new))


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[int, str, float]:
    """pytest on `tests` in the copy, stopping at the first failure; (exit code, last output line, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    check = "import onlinespec, sys; sys.stdout.write(onlinespec.__file__)"
    imported = subprocess.run([sys.executable, "-c", check], env=env, cwd=root, capture_output=True, text=True)
    if not imported.stdout.startswith(str(root)):
        sys.exit(f"onlinespec was imported from {imported.stdout or imported.stderr}, not the copy {root}")
    started = time.monotonic()
    args = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    done = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, (lines[-1] if lines else done.stderr.strip()[-200:]), time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=[p.name for p in PLANTS], help="run just these plants")
    args = parser.parse_args()
    bugs = [p for p in PLANTS if not args.only or p.name in args.only]
    needed = tuple(sorted({t for p in bugs for t in p.tests}))

    clean = make_copy()
    try:
        code, summary, seconds = run_tests(clean, needed)
    finally:
        shutil.rmtree(clean, ignore_errors=True)
    print(f"unplanted: {summary} ({seconds:.0f} s)", flush=True)
    if code != 0:
        print("the unplanted code must pass these tests first")
        return 1

    missed = []
    for bug in bugs:
        root = make_copy()
        try:
            plant(root, bug)
            code, summary, seconds = run_tests(root, bug.tests)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        caught = code == 1  # 1: tests failed; anything else (errors, interrupted) is not a catch
        missed += [] if caught else [bug.name]
        verdict = "caught" if caught else f"MISSED (pytest exit {code})"
        print(f"{bug.name:26s} {verdict:10s} {summary} ({seconds:.0f} s): {bug.what}", flush=True)
    print(f"{len(bugs) - len(missed)} of {len(bugs)} planted bugs caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
