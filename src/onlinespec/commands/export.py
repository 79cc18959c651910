"""`onlinespec export`: write a saved EAGLE or EAGLE-3 head in the layout vLLM or SGLang loads (library:
onlinespec/export/)."""

from __future__ import annotations

import argparse
import json
import sys

from onlinespec.commands.flags import add_model_flags
from onlinespec.errors import UserError

NAME = "export"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from onlinespec.export import FORMATS

    p = subparsers.add_parser(NAME, help="export an EAGLE or EAGLE-3 head for vLLM or SGLang")
    p.add_argument("--draft", required=True, metavar="eagle:DIR", help="the head to export, as eagle:DIR or eagle3:DIR")
    add_model_flags(p, target_help="the target model spec the head was trained for (default: %(default)s)", dtype=False)
    p.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    p.add_argument("--format", choices=FORMATS, default="vllm", help="engine layout (default: %(default)s)")
    p.add_argument(
        "--inexact", action="store_true", help="export a default-layout head by dropping its two norms (see README)"
    )
    p.add_argument(
        "--drop-draft-vocab",
        action="store_true",
        help="vllm: export a reduced-vocabulary head to draft over the full vocabulary",
    )


def run(args: argparse.Namespace) -> int:
    from onlinespec.drafts import parse_draft_spec
    from onlinespec.export import export_eagle, export_eagle3

    wrong = UserError(
        f"--draft must be eagle:DIR or eagle3:DIR (a head saved by `onlinespec warmup`), not '{args.draft}'"
    )
    try:
        spec = parse_draft_spec(args.draft)
    except UserError:
        raise wrong from None
    if spec.kind.name not in ("eagle", "eagle3") or spec.argument in (None, "", "fresh"):
        raise wrong
    where = spec.argument
    if spec.kind.name == "eagle3":  # exact in both engines: nothing to drop, so --inexact and friends do not apply
        out = export_eagle3(where, args.out, args.target, args.format)
    else:
        out = export_eagle(
            where, args.out, args.target, args.format, inexact=args.inexact, drop_draft_vocab=args.drop_draft_vocab
        )
    info = json.loads((out / "config.json").read_text())["onlinespec"]
    print(f"exported {args.draft} for {args.format} to {out} (exact: {str(info['exact']).lower()})", file=sys.stderr)
    return 0
