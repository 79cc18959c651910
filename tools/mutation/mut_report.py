"""Scores and survivors: results.json (every mutant) and report.md (per-group and per-file scores, survivors).

Status of a mutant: killed (a test failed, or collection failed), timeout (past its limit: counted as killed),
crashed (the test process died on a signal: counted as killed), survived (every selected test passed),
no-tests (no test of the pool ran its lines: counted as survived), error (the runner failed: left out of scores).
A survivor listed in the equivalents file (`- `KEY`: why`) is `equivalent`: it cannot change behaviour, and is
left out of the score's denominator.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

KILLED = ("killed", "timeout", "crashed")
SURVIVED = ("survived", "no-tests")
_EQUIVALENT_LINE = re.compile(r"^- `(?P<key>.+)`: (?P<why>.+)$")


def load_equivalents(path: Path) -> dict[str, str]:
    """{mutant key: reason} from lines `- `KEY`: reason` of a markdown file (missing file: none)."""
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        match = _EQUIVALENT_LINE.match(line.strip())
        if match:
            found[match["key"]] = match["why"]
    return found


def score(rows: list[dict]) -> dict:
    """Counts and score = killed / (mutants - equivalent - errors), in percent (None when nothing is left)."""
    count = defaultdict(int)
    for row in rows:
        count[row["status"]] += 1
    killed = sum(count[s] for s in KILLED)
    survived = sum(count[s] for s in SURVIVED)
    scored = killed + survived
    return {
        "mutants": len(rows),
        "killed": killed,
        "timeout": count["timeout"],
        "survived": count["survived"],
        "no_tests": count["no-tests"],
        "equivalent": count["equivalent"],
        "error": count["error"],
        "score": round(100 * killed / scored, 1) if scored else None,
    }


def mark_equivalents(rows: list[dict], equivalents: dict[str, str]) -> None:
    for row in rows:
        if row["status"] in SURVIVED and row["key"] in equivalents:
            row["status"] = "equivalent"
            row["why_equivalent"] = equivalents[row["key"]]


def write(out: Path, rows: list[dict], header: dict) -> dict:
    """Write results.json and report.md under `out`; return the scores."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    by_file: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_group[row["group"]].append(row)
        by_file[row["path"]].append(row)
    scores = {
        "groups": {g: score(r) for g, r in by_group.items()},
        "files": {f: score(r) for f, r in sorted(by_file.items())},
        "total": score(rows),
    }
    (out / "results.json").write_text(json.dumps({**header, "scores": scores, "mutants": rows}, indent=1))
    (out / "report.md").write_text(_markdown(rows, scores, header))
    return scores


def _table(title: str, scores: dict[str, dict]) -> list[str]:
    lines = [
        f"| {title} | mutants | killed | of which timeout | survived | not run by any test | equivalent | score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in scores.items():
        pct = "n/a" if s["score"] is None else f"{s['score']} %"
        lines.append(
            f"| `{name}` | {s['mutants']} | {s['killed']} | {s['timeout']} | {s['survived']} | {s['no_tests']} "
            f"| {s['equivalent']} | {pct} |"
        )
    return lines


def _markdown(rows: list[dict], scores: dict, header: dict) -> str:
    lines = [
        "# Mutation testing report",
        "",
        f"Command: `{header['command']}`  ",
        f"Date: {header['date']}, commit {header['commit']}, {header['seconds']:.0f} s.  ",
        f"Tests ({header['tests']}) per mutant: those that ran its lines, {header['selection']}; left out as slow: "
        + (", ".join(f"`{t}`" for t in header["left_out"]) or "none")
        + ".",
        "",
        "Score = killed / (mutants - equivalent - runner errors); a timeout counts as killed, a mutant no selected "
        "test runs counts as survived.",
        "",
        *_table("group", scores["groups"]),
        "",
        *_table("file", scores["files"]),
        "",
        "## Survivors",
        "",
    ]
    survivors = [r for r in rows if r["status"] in (*SURVIVED, "equivalent", "error")]
    if not survivors:
        lines.append("None.")
    for row in survivors:
        lines.append(
            f"- `{row['key']}`  \n  {row['path']}:{row['line']} ({row['status']}, {row['tests_ran']} tests ran): "
            f"`{_short(row['original'])}` -> `{_short(row['replacement'])}`"
            + (f"  \n  equivalent: {row['why_equivalent']}" if row.get("why_equivalent") else "")
        )
    return "\n".join(lines) + "\n"


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
