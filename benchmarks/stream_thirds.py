"""Each method's stream in thirds, from finished `onlinespec bench` runs: tau, the draft's sources, the head's loss.

    python benchmarks/stream_thirds.py RUN_DIR [RUN_DIR ...] \
        --reference "ogd-adam@epochs=1@prompt_positions=0@lr=1e-9" --reference-run RUN_DIR

For every method of every run (rounds.jsonl), per third of its rounds (the last third is the bench report's: the
last len // 3 rounds; the first third as many from the start, the middle the rest):
- tau: the third's new tokens / its target forwards;
- per draft source (hybrid drafts): verify steps drafted, the share of scored proposals whose first token the
  target committed, and the mean number of their tokens it committed (the source gate's score);
- with --reference: the loss before each round's update (prequential: the learner's decision scored on feedback it
  has not trained on) / the reference method's loss on the same round, averaged over the whole stream and over each
  third, from round 2 on (round 1 is the same warm start for all). A learner at a negligible lr (1e-9: below a bf16
  weight's spacing, so the draft never changes) gives the frozen draft's loss on each round. The reference
  is a method of --reference-run (default: the first run); runs of the same preset, stream and prompts have the
  same rounds, so a frozen reference (a learner at lr 1e-9) measured once serves every run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def read_rounds(run: str) -> list[dict]:
    path = Path(run) / "rounds.jsonl"
    if not path.is_file():
        raise SystemExit(f"'{path}' does not exist: give the folder of a finished bench run")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def thirds(rounds: list[int]) -> list[list[int]]:
    """Sorted round numbers -> [first, middle, last] thirds; the last is the bench report's (len // 3, at least 1)."""
    n = max(1, len(rounds) // 3)
    return [rounds[:n], rounds[n:-n], rounds[-n:]]


def loss_ratios(per_round: dict[int, dict], reference: dict[int, float] | None) -> dict[int, float]:
    """round -> its loss before the update / the reference's loss on that round, from round 2 on (round 1 is the
    same warm start for all); rounds without a loss on either side are left out."""
    if not reference:
        return {}
    return {
        t: float(row["loss"]) / reference[t]
        for t, row in per_round.items()
        if t > 1 and row.get("loss") is not None and reference.get(t, 0) > 0
    }


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(rows: list[dict], reference: dict[int, float] | None) -> dict[str, dict]:
    """method -> {"thirds": one dict per third (tau, sources {name: (steps, first-right rate, mean score)},
    loss_ratio), "loss_ratio": the mean loss ratio over the whole stream (rounds 2..T)}."""
    by_method: dict[str, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        by_method[row["method"]][row["round"]] = row
    out = {}
    for method, per_round in by_method.items():
        ratios = loss_ratios(per_round, reference)
        parts = []
        for rounds in thirds(sorted(per_round)):
            rows_ = [per_round[t] for t in rounds]
            forwards = sum(r["target_forwards"] for r in rows_)
            sources: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # steps, scored, first_right, matched
            for r in rows_:
                for name, s in (r.get("sources") or {}).items():
                    acc = sources[name]
                    acc[0] += s["steps"]
                    acc[1] += s["scored"]
                    acc[2] += s["first_right"]
                    acc[3] += s["matched"]
            parts.append(
                {
                    "tau": sum(r["new_tokens"] for r in rows_) / forwards if forwards else 0.0,
                    "sources": {
                        name: (a[0], a[2] / a[1] if a[1] else 0.0, a[3] / a[1] if a[1] else 0.0)
                        for name, a in sources.items()
                    },
                    "loss_ratio": mean([ratios[t] for t in rounds if t in ratios]),
                }
            )
        out[method] = {"thirds": parts, "loss_ratio": mean([ratios[t] for t in sorted(ratios)])}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="`onlinespec bench --out` folders (each read for its rounds.jsonl)")
    p.add_argument("--reference", help="the method whose round losses are the reference (e.g. a learner at lr 1e-9)")
    p.add_argument("--reference-run", help="the run holding --reference (default: the first run)")
    args = p.parse_args(argv)
    reference = None
    if args.reference:
        ref_rows = read_rounds(args.reference_run or args.runs[0])
        reference = {r["round"]: float(r["loss"]) for r in ref_rows if r["method"] == args.reference and r.get("loss")}
        if not reference:
            raise SystemExit(f"no round losses for reference '{args.reference}' in that run")
    for run in args.runs:
        print(f"{run}:")
        for method, summary in summarise(read_rounds(run), reference).items():
            parts = summary["thirds"]
            taus = " / ".join(f"{part['tau']:.3f}" for part in parts)
            print(f"  {method}: tau by thirds {taus}")
            for name in sorted({n for part in parts for n in part["sources"]}):
                cells = []
                for part in parts:
                    steps, first, matched = part["sources"].get(name, (0, 0.0, 0.0))
                    cells.append(f"{steps} steps, first right {first:.3f}, mean {matched:.3f}")
                print(f"    {name}: " + " | ".join(cells))
            if summary["loss_ratio"] is not None:
                ratios = " / ".join(
                    "-" if part["loss_ratio"] is None else f"{part['loss_ratio']:.3f}" for part in parts
                )
                print(f"    loss vs reference: whole stream {summary['loss_ratio']:.3f}, by thirds {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
