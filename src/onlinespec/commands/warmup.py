"""`onlinespec warmup`: distil a draft head from the target on text available offline, then measure it.

Phases (each resumable): the target's greedy answers to warm-up prompts -> teacher passes (features + top-K) over
answers and CPython text -> distillation within a time/step budget -> held-out agreement and a speculative
decoding check on held-out prompts. The head lands in --out/KIND as config.json + model.safetensors (load it with
`--draft KIND:DIR`); warmup.json beside it records the command, seed, data and results.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from onlinespec.commands.common import config_from_args, owned_directory
from onlinespec.commands.flags import add_model_flags
from onlinespec.errors import UserError

if TYPE_CHECKING:
    from onlinespec.warmup.run import WarmupConfig

NAME = "warmup"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from onlinespec.drafts import HEAD_KIND_NAMES
    from onlinespec.warmup.distill import SCHEDULES
    from onlinespec.warmup.run import DATA_SOURCES

    p = subparsers.add_parser(NAME, help="distil a draft head from the target on offline text")
    add_model_flags(p, dtype=False)
    p.add_argument("--draft", default="eagle", help=f"head kind: {', '.join(HEAD_KIND_NAMES)} (default: %(default)s)")
    p.add_argument("--out", required=True, help="directory for the head, checkpoints and caches")
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget (default: %(default)s)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0 = time budget only)")
    p.add_argument("--data", default="answers,stdlib,pydoc", help=f"sources from {', '.join(DATA_SOURCES)}")
    p.add_argument("--answers", type=int, default=48, help="warm-up prompts the target answers (default: %(default)s)")
    p.add_argument(
        "--streams",
        default="humaneval:40,spider:40,finance:24",
        help="the prompts to answer: the first N of each named stream's warm-up slice, never its online slice, "
        "taken in turn (NAME[:N],...; N defaults to the whole slice; default: %(default)s)",
    )
    p.add_argument("--answer-tokens", type=int, default=128, help="max tokens of each target answer")
    p.add_argument("--corpus-tokens", type=int, default=120_000, help="tokens taken from stdlib + pydoc")
    p.add_argument("--seq-len", type=int, default=256, help="corpus sequence length (default: %(default)s)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens per batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (default: %(default)s)")
    p.add_argument(
        "--unroll",
        type=int,
        help="EAGLE training passes on its own features (default: 2, or with --init the initial head's own)",
    )
    p.add_argument(
        "--eagle-layout",
        choices=("onlinespec", "eagle1"),
        default="onlinespec",
        help="eagle1 = the exact EAGLE-1 head vLLM/SGLang run, for `onlinespec export` (default: %(default)s)",
    )
    p.add_argument("--draft-vocab", type=int, default=8192, help="reduced draft vocabulary size, 0 = full")
    p.add_argument("--top-k", type=int, default=32, help="target probabilities kept per position")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted warm-up in --out")
    p.add_argument(
        "--prompts",
        help="a JSONL file of more prompts for the target to answer, after the warm-up slices "
        "(`python -m onlinespec.warmup.prompt_pool FILE` writes a broad one from the installed data)",
    )
    p.add_argument(
        "--answer-batch",
        type=int,
        default=1,
        help="answer this many prompts per batched generate call (on a GPU; 1 = our exact greedy path)",
    )
    p.add_argument("--schedule", choices=SCHEDULES, default="constant", help="learning-rate schedule")
    p.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (default: %(default)s)")
    p.add_argument("--init", help="start from this saved head (a warm-up's KIND folder) and its draft vocabulary")
    p.add_argument(
        "--teacher-dtype",
        choices=("float32", "bfloat16", "auto"),
        default="float32",
        help="dtype of the target copy that answers the prompts, labels the positions and runs the decoding check "
        "(the head trains in float32); bfloat16 = a second copy, faster on a CPU with bf16 instructions and what a "
        "bf16 target drafts from (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    cfg = _config(args)  # every flag is checked before the output folder is taken: a mistake leaves nothing behind
    with owned_directory(args.out, "warm-up output folder"):
        return _run(args, cfg)


def _config(args: argparse.Namespace) -> WarmupConfig:
    from onlinespec.drafts import HEAD_KIND_NAMES
    from onlinespec.warmup.run import DATA_SOURCES, WarmupConfig, parse_warmup_streams

    if args.draft not in HEAD_KIND_NAMES:
        raise UserError(f"warmup trains heads: --draft must be one of {', '.join(HEAD_KIND_NAMES)}, not '{args.draft}'")
    sources = [s.strip() for s in args.data.split(",") if s.strip()]
    if not sources or set(sources) - set(DATA_SOURCES):
        raise UserError(f"--data takes a comma list from {', '.join(DATA_SOURCES)}, got '{args.data}'")
    if min(args.seq_len, args.batch_tokens, args.top_k, args.unroll or 1) < 1 or args.minutes <= 0:
        raise UserError("--seq-len, --batch-tokens, --top-k, --unroll and --minutes must be positive")
    if args.prompts and not Path(args.prompts).is_file():
        raise UserError(f"--prompts '{args.prompts}' is not a file: give a JSONL file of prompts")
    if args.init and not Path(args.init).is_dir():
        raise UserError(f"--init '{args.init}' is not a folder: give a head folder a warm-up wrote (OUT/KIND)")
    if args.answer_batch < 1:
        raise UserError("--answer-batch must be at least 1")
    if args.batch_tokens < args.seq_len:
        raise UserError("--batch-tokens must be at least --seq-len")
    streams = parse_warmup_streams(args.streams)
    return config_from_args(WarmupConfig, args, kind=args.draft, sources=tuple(sources), streams=streams)


def _run(args: argparse.Namespace, cfg: WarmupConfig) -> int:
    from onlinespec.warmup.run import run_warmup

    record = run_warmup(cfg, command="onlinespec " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    before, after = record["held_out_top1_agreement"].values()
    decoding = record["held_out_decoding"]
    head_dir = Path(args.out) / args.draft
    print(
        f"warm-up done in {record['total_s'] / 60:.1f} min ({record['steps']} steps): held-out top-1 agreement "
        f"{_pct(before)} -> {_pct(after)} (per head output); decoding {decoding['prompts']} held-out prompts, "
        f"k={decoding['k']}: alpha {decoding['alpha']:.3f}, tau {decoding['tau']:.2f}. Head: {head_dir} "
        f"(use --draft {args.draft}:{head_dir})",
        file=sys.stderr,
    )
    return 0


def _pct(values: list[float]) -> str:
    return "/".join(f"{100 * v:.1f}%" for v in values)
