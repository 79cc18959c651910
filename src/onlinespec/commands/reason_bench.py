"""`onlinespec reason-bench`: the lookahead-reasoning benchmark (reasoning/stream_bench.py): target alone, draft
alone, and lookahead reasoning with a frozen draft, an online-SFT draft and an online-DPO draft, interleaved over a
stream of math word problems. Resumes when run again with the same --out and flags.

onlinespec reason-bench --preset quick --out runs/reason-quick
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from onlinespec.commands.common import quiet_transformers
from onlinespec.commands.flags import add_reasoning_flags
from onlinespec.errors import UserError

NAME = "reason-bench"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from onlinespec.reasoning.stream_bench import REASON_METHODS, REASON_PRESETS

    presets = "\n".join(f"  {name}: {text}" for name, (_, text) in REASON_PRESETS.items())
    p = subparsers.add_parser(
        NAME,
        help="benchmark lookahead reasoning with an online-learning draft on math word problems",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"presets (flags given explicitly override them):\n{presets}",
    )
    p.add_argument("--preset", choices=tuple(REASON_PRESETS), default="quick", help="(default: %(default)s)")
    add_reasoning_flags(p)
    p.add_argument("--problems", type=int, default=None, help="problems from the stream's start (default: preset's)")
    p.add_argument("--methods", default=None, help=f"comma-separated, from {','.join(REASON_METHODS)} (default: all)")
    p.add_argument("--round-problems", type=int, default=None, help="problems per learning round (default: preset's)")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder; an existing one with the same settings is resumed (default: ./reason-<timestamp>)",
    )


def run(args: argparse.Namespace) -> int:
    from onlinespec.commands.reason import _settings
    from onlinespec.models.resolve import load_model
    from onlinespec.reasoning.stream_bench import REASON_PRESETS, ReasonBenchSettings, run_reason_bench

    if args.methods is not None:
        args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    preset, _ = REASON_PRESETS[args.preset]
    settings = _settings(args, ReasonBenchSettings, **preset)
    settings.check()
    out = Path(args.out or f"reason-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder")
    quiet_transformers()
    target = load_model(settings.target, settings.dtype, settings.weight_layout, settings.attention)
    draft = load_model(settings.draft, settings.dtype, settings.weight_layout, settings.attention)
    summary = run_reason_bench(settings, out, (target.model, target.tokenizer), (draft.model, draft.tokenizer))
    from onlinespec.reasoning.stream_bench import report

    sys.stdout.write(report(summary))
    print(
        f"results: {out / 'results.json'}, {out / 'report.md'}, per problem: {out / 'problems.jsonl'}", file=sys.stderr
    )
    return 0
