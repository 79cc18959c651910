"""Each learner's prequential loss against a reference method's, from a finished `onlinespec bench` run.

    python benchmarks/prequential_loss.py RUN_DIR --reference "ogd-adam@epochs=1@prompt_positions=0@lr=1e-9"

A round's `loss` in rounds.jsonl is the learner's loss on that round's feedback BEFORE its update: its decision w_t
scored on feedback it has not trained on (prequential). A learner at a negligible lr (1e-9: below a bf16 weight's
spacing, so the draft never changes) gives the frozen draft's loss on each round, as a reference. Prints, per method
that records a loss, the mean over rounds 2..T of loss / reference loss (round 1 is the same warm start for all)
and the same over the last third of those rounds. Rounds hold different positions per method (what was verified
depends on what was drafted), so the ratio is per round, then averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def loss_ratios(rows: list[dict], reference: str) -> dict[str, tuple[float, float]]:
    """method -> (mean over rounds 2..T of loss / reference's loss, the same over the last third of them)."""
    losses: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row.get("loss") is not None:
            losses[row["method"]][row["round"]] = float(row["loss"])
    if reference not in losses:
        raise SystemExit(f"no round losses for reference '{reference}': methods with losses are {', '.join(losses)}")
    ref = losses[reference]
    out = {}
    for method, per_round in losses.items():
        rounds = [t for t in sorted(per_round) if t > 1 and t in ref and ref[t] > 0]
        if not rounds:
            continue
        ratios = [per_round[t] / ref[t] for t in rounds]
        tail = ratios[-max(1, len(ratios) // 3) :]
        out[method] = (sum(ratios) / len(ratios), sum(tail) / len(tail))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="an `onlinespec bench --out` folder (reads its rounds.jsonl)")
    p.add_argument("--reference", required=True, help="the method whose round losses are the reference")
    args = p.parse_args(argv)
    path = Path(args.run) / "rounds.jsonl"
    if not path.is_file():
        raise SystemExit(f"'{path}' does not exist: give the folder of a finished bench run")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for method, (whole, last) in loss_ratios(rows, args.reference).items():
        print(f"{method}: next-round loss vs reference {whole:.3f}, last third {last:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
