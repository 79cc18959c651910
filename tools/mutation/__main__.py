"""Mutation testing of onlinespec's core: `python3 tools/mutation --groups decoding learners --out mutation-out`.

Not part of CI (it takes long). For each group (mut_targets.py) every mutant (mut_operators.py) of its files is
written into a temporary copy of src/ and tests/ (never the working tree), and the pool's tests that ran the
mutated lines in an unmutated map run (mut_pytest.LineMap) run against it, fastest first, with pytest -x -q
-p no:cacheprovider and a per-mutant time limit, in a forked child (mut_fork.py). A mutant survives when they all
pass. Results go to OUT/results.json and OUT/report.md (mut_report.py); OUT/results.jsonl lets an interrupted run
resume. Run it under `nice -n 19`: one mutant at a time, one torch thread.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from mut_fork import preload, run_forked
from mut_operators import Mutant, mutants_of
from mut_pytest import map_lines, precompile, run_tests
from mut_report import KILLED, load_equivalents, mark_equivalents, write
from mut_targets import GROUPS, Group

REPO = Path(__file__).resolve().parents[2]
EQUIVALENTS = REPO / "docs" / "mutation-equivalent.md"
SLOW_CASE_S = 1.0  # --per-function limits only the cases of a parametrized test that took this long in the map run


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 tools/mutation", description=__doc__.splitlines()[0])
    ap.add_argument("--groups", nargs="+", default=["decoding", "learners"], choices=list(GROUPS))
    ap.add_argument("--out", default="mutation-out", help="directory for results.json, report.md, logs")
    ap.add_argument("--max-mutants", type=int, default=0, help="sample this many mutants per group (0 = all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --max-mutants sample")
    ap.add_argument("--only", default="", help="only mutants whose key contains this text (e.g. a file name)")
    ap.add_argument(
        "--max-test-s",
        type=float,
        default=20,
        help="leave out tests that took longer than this in the map run (traced); 0 = keep all",
    )
    ap.add_argument(
        "--per-function",
        type=int,
        default=2,
        help="run at most this many cases of one parametrized test per mutant (the fastest) among those that take "
        "a second or more; faster cases (tables of settings, say) all run; 0 = all",
    )
    # generous: on a loaded machine a surviving mutant must not pass for a timeout (a kill)
    ap.add_argument("--timeout-base", type=float, default=120, help="per-mutant limit: base + factor x tests' time")
    ap.add_argument("--timeout-factor", type=float, default=5)
    ap.add_argument(
        "--reuse",
        choices=("same", "killed", "none"),
        default="same",
        help="results.jsonl rows to keep: same = all when src/ and tests/ are unchanged; killed = killed "
        "mutants of unchanged files even after tests changed (re-runs survivors only); none",
    )
    ap.add_argument("--tests-rev", default="", help="take tests/ from this git revision (e.g. scores before new tests)")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    return ap.parse_args(argv)


def source_files(group: Group) -> list[str]:
    found = sorted({str(p.relative_to(REPO)) for pattern in group.sources for p in REPO.glob(pattern)})
    return [f for f in found if f.endswith(".py")]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(root: Path) -> str:
    """A hash of the copy's src/ and tests/ Python files."""
    h = hashlib.sha256()
    for path in sorted([*root.glob("src/**/*.py"), *root.glob("tests/**/*.py")]):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def make_copy(tests_rev: str) -> Path:
    """src/, tests/ (from git revision `tests_rev` if given) and pyproject.toml in a fresh temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="onlinespec-mutation-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis")
    shutil.copytree(REPO / "src", root / "src", ignore=ignore)
    if tests_rev:
        archive = subprocess.run(["git", "archive", tests_rev, "tests"], cwd=REPO, capture_output=True)
        if archive.returncode:
            sys.exit(f"--tests-rev {tests_rev}: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(root, filter="data")
    else:
        shutil.copytree(REPO / "tests", root / "tests", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    precompile(root / "src")
    return root


def line_map(root: Path, out: Path, pool: list[str], files: list[str], print_: callable) -> dict:
    """The map run; OUT/linemap.json is reused when the copy's src/ and tests/ are unchanged and it covered at
    least this pool and these files."""
    stamp = fingerprint(root)
    path = out / "linemap.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == stamp and set(pool) <= set(saved["pool"]) and set(files) <= set(saved["files"]):
            print_(f"line map: reused {path}")
            return saved
    print_(f"line map: running {len(pool)} test files unmutated (once) ...")
    raw = out / "linemap.raw.json"
    tic = time.monotonic()
    kind, code = run_forked(
        lambda: map_lines(root, pool, {str(root / f) for f in files}, raw), 4 * 3600, out / "logs" / "linemap.log"
    )
    if not raw.exists():
        sys.exit(f"the map run failed ({kind} {code}): see {out / 'logs' / 'linemap.log'}")
    data = json.loads(raw.read_text())
    prefix = str(root) + "/"
    data["lines"] = {
        test: {f.removeprefix(prefix): lines for f, lines in hits.items()} for test, hits in data["lines"].items()
    }
    data.update(fingerprint=stamp, pool=pool, files=files)
    path.write_text(json.dumps(data))
    raw.unlink()
    print_(f"line map: {len(data['durations'])} tests in {time.monotonic() - tic:.0f} s, {len(data['failed'])} failed")
    return data


def select(mutant: Mutant, group: Group, data: dict, max_test_s: float, per_function: int) -> list[str]:
    """The pool's tests that ran the mutant's lines (any line of its file, for import-time code), fastest first:
    none slower than `max_test_s`, at most `per_function` cases of a parametrized test that take SLOW_CASE_S or
    more (0 = no limit)."""
    durations, lines = data["durations"], data["lines"]
    pool = [t for t in durations if t.split("::")[0] in group.tests and t not in data["failed"]]
    if max_test_s:
        pool = [t for t in pool if durations[t] <= max_test_s]
    if group.by_lines:
        span = set(range(mutant.line, mutant.end_line + 1))
        if mutant.in_function:
            pool = [t for t in pool if span & set(lines[t].get(mutant.path, ()))]
        else:
            pool = [t for t in pool if lines[t].get(mutant.path)]
    chosen, cases = [], {}
    for test in sorted(pool, key=lambda t: durations[t]):
        function = test.split("[")[0]
        if durations[test] >= SLOW_CASE_S:
            cases[function] = cases.get(function, 0) + 1
        if not per_function or cases.get(function, 0) <= per_function:
            chosen.append(test)
    return chosen


def run_mutant(root: Path, out: Path, mutant: Mutant, tests: list[str], data: dict, args) -> dict:
    row = {k: getattr(mutant, k) for k in ("key", "path", "line", "qualname", "operator", "original", "replacement")}
    row.update(tests_selected=len(tests), tests_ran=0, killed_by=None, message="")
    if not tests:
        return {**row, "status": "no-tests", "seconds": 0.0}
    target = root / mutant.path
    original = target.read_text()
    result = out / "logs" / "mutant.json"
    result.unlink(missing_ok=True)
    limit = args.timeout_base + args.timeout_factor * sum(data["durations"][t] for t in tests)
    tic = time.monotonic()
    target.write_text(mutant.source)
    try:
        kind, code = run_forked(lambda: run_tests(root, tests, result), limit, out / "logs" / "mutant.log")
    finally:
        target.write_text(original)
    row["seconds"] = round(time.monotonic() - tic, 1)
    detail = json.loads(result.read_text()) if result.exists() else {}
    row.update(tests_ran=detail.get("ran", 0), killed_by=detail.get("first_failure"), message=detail.get("message", ""))
    if kind == "timeout":
        row["status"] = "timeout"
    elif kind == "signal":
        row.update(status="crashed", message=f"signal {code}")
    elif code == 0:
        row["status"] = "survived"
    elif code in (1, 2) or (code in (3, 4) and row["killed_by"]):  # a test or a test module's import failed
        row["status"] = "killed"
    else:
        row["status"] = "error"
        shutil.copy(out / "logs" / "mutant.log", out / "logs" / f"error-{sha(mutant.key)}.log")
    return row


def git_commit() -> str:
    """HEAD's short hash, + "+changes" when src/ or tests/ differ from it."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src", "tests"], cwd=REPO, capture_output=True, text=True)
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    groups = [GROUPS[g] for g in args.groups]
    plan: list[tuple[Group, Mutant]] = []
    rng = random.Random(args.seed)
    sources = {f: (REPO / f).read_text() for g in groups for f in source_files(g)}
    for group in groups:
        found = [m for f in source_files(group) for m in mutants_of(f, sources[f]) if args.only in m.key]
        if args.max_mutants and len(found) > args.max_mutants:
            keep = set(rng.sample(range(len(found)), args.max_mutants))
            found = [m for i, m in enumerate(found) if i in keep]
        plan.extend((group, m) for m in found)
    if args.list:
        for group, m in plan:
            print(f"{group.name}\t{m.path}:{m.line}\t{m.operator}\t{m.key}")
        print(f"{len(plan)} mutants")
        return

    def print_(text: str) -> None:
        print(text, flush=True)

    tic = time.monotonic()
    choice = f"max_test_s={args.max_test_s:g} per_function={args.per_function} (cases of {SLOW_CASE_S:g} s or more)"
    header = {
        "command": " ".join(["python3 tools/mutation", *argv]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "selection": choice,
        "tests": f"tests/ of {args.tests_rev}" if args.tests_rev else "tests/ of the working tree",
    }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped (SIGTERM)"))  # so the temporary copy is removed
    root = make_copy(args.tests_rev)
    try:
        preload()
        pool = [t for t in dict.fromkeys(t for g in groups for t in g.tests) if (root / t).exists()]
        files = sorted({f for g in groups for f in source_files(g)})
        data = line_map(root, out, pool, files, print_)
        stamp = data["fingerprint"]
        previous = {}
        jsonl = out / "results.jsonl"
        if jsonl.exists() and args.reuse != "none":
            for line in jsonl.read_text().splitlines():
                row = json.loads(line)
                same_run = row.get("fingerprint") == stamp and row.get("selection") == choice
                killed_here = args.reuse == "killed" and row["status"] in KILLED
                unchanged = row["path"] in sources and row.get("file_sha") == sha(sources[row["path"]])
                # errors and timeouts run again (a timeout may have been a slow moment of a busy machine)
                if unchanged and row["status"] not in ("error", "timeout") and (same_run or killed_here):
                    previous[row["key"]] = row
        rows = []
        with jsonl.open("w") as sink:
            for i, (group, mutant) in enumerate(plan, 1):
                row = previous.get(mutant.key)
                if row is None:
                    tests = select(mutant, group, data, args.max_test_s, args.per_function)
                    row = run_mutant(root, out, mutant, tests, data, args)
                    file_sha = sha(sources[mutant.path])
                    row.update(group=group.name, fingerprint=stamp, file_sha=file_sha, selection=choice)
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                rows.append(row)
                print_(
                    f"[{i}/{len(plan)}] {row['status']:9} {row['seconds']:6.1f}s {mutant.path}:{mutant.line} "
                    f"{mutant.operator}  {' '.join(mutant.original.split())[:60]}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mark_equivalents(rows, load_equivalents(EQUIVALENTS))
    header["seconds"] = time.monotonic() - tic
    header["left_out"] = sorted(t for t, s in data["durations"].items() if args.max_test_s and s > args.max_test_s)
    scores = write(out, rows, header)
    for name, s in scores["groups"].items():
        print_(
            f"{name}: score {s['score']} % ({s['killed']} killed of {s['mutants']}, {s['survived']} survived, "
            f"{s['no_tests']} not run by any test, {s['equivalent']} equivalent)"
        )
    print_(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
