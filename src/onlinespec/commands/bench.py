"""`onlinespec bench`: how much faster decoding gets as the draft evolves, on the embedded default, offline.

onlinespec bench --preset quick                  # ~3 min on 2 CPU cores: 24 prompts, ar, static, count, ogd
onlinespec bench --preset full --out runs/full   # ~35 min: 120 prompts over six domains, all five methods
onlinespec bench --preset full --out runs/full --resume      # continue after an interruption
onlinespec bench --preset adapt --out runs/adapt              # a domain the bundled head never saw: learning shows
onlinespec bench --prompts my.jsonl --methods ar,static,ogd  # your prompts: {"prompt": ...} or {"messages": [...]}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from onlinespec.commands.common import quiet_transformers
from onlinespec.commands.flags import (
    add_draft_flags,
    add_learning_flags,
    add_model_flags,
    add_tree_flags,
    online_config_from_args,
    tree_config_from_args,
)
from onlinespec.errors import UserError

NAME = "bench"

# Learning flags that `generate` needs but the benchmark sets itself (per method, in --out, sync schedule).
_NOT_FOR_BENCH = ("learner", "round_tokens", "draft_state", "telemetry")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from onlinespec.bench.presets import PRESETS
    from onlinespec.bench.prompts import STREAM_NAMES
    from onlinespec.bench.runner import METHODS

    presets = "\n".join(
        f"  {name}: {p.num_prompts} prompts of {p.stream}, {p.max_new_tokens} new tokens, rounds of {p.round_size},\n"
        f"    methods {','.join(p.methods)}, k={p.k or 'the draft default (7 for auto)'}; {p.expected} on 2 CPU cores"
        for name, p in PRESETS.items()
    )
    bench = subparsers.add_parser(
        NAME,
        help="compare decoding speed of ar, static and online-learning drafts on a prompt stream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"presets (flags given explicitly override them):\n{presets}",
    )
    bench.add_argument("--preset", choices=tuple(PRESETS), default="quick", help="(default: %(default)s)")
    source = bench.add_mutually_exclusive_group()
    source.add_argument(
        "--stream",
        default=None,
        help=f"built-in stream: {', '.join(STREAM_NAMES)}, or shifted:a,b,... (default: the preset's)",
    )
    source.add_argument(
        "--prompts",
        default=None,
        metavar="FILE.jsonl|DATASET",
        help="your prompts: a JSONL file (one object a line with a 'prompt' string or chat 'messages'), or an HF "
        "datasets name[:config] when a hub is reachable",
    )
    bench.add_argument("--prompt-field", default="prompt", help="field holding the prompt text (default: %(default)s)")
    bench.add_argument("--split", default="train", help="dataset split for an HF dataset (default: %(default)s)")
    bench.add_argument("--num-prompts", type=int, default=None, help="online prompts to decode (default: the preset's)")
    bench.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, must include ar; from {','.join(METHODS)}, or a learner with its own settings, "
        "LEARNER[-STEP][@FIELD=VALUE]..., e.g. ogd-adam@lr=5e-4 (default: the preset's)",
    )
    add_model_flags(bench)
    add_draft_flags(bench, k_help="drafted tokens per verify step (default: the draft's own, as for generate)")
    add_tree_flags(bench)
    bench.add_argument("--max-new-tokens", type=int, default=None, help="(default: the preset's)")
    bench.add_argument("--no-chat", action="store_true", help="feed prompts as raw text, no chat template")
    bench.add_argument("--seed", type=int, default=0, help="torch seed, recorded (default: %(default)s)")
    bench.add_argument("--out", default=None, metavar="DIR", help="output folder (default: ./bench-<timestamp>)")
    bench.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_learning_flags(bench)
    bench.set_defaults(k=None, round_size=None, schedule="sync")  # None: the preset's
    for action in bench._actions:  # argparse has no public way to change an inherited flag's help
        if action.dest in _NOT_FOR_BENCH:
            action.help = argparse.SUPPRESS
        elif action.dest == "round_size":
            action.help = "prompts per learning round, the same for every method (default: the preset's)"


def _pick(flag: int | None, preset_value: int | None) -> int | None:
    """A flag given on the command line wins over the preset (even 0, which is then reported as an error)."""
    return preset_value if flag is None else flag


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def run(args: argparse.Namespace) -> int:
    from onlinespec.bench import run_bench
    from onlinespec.bench.presets import get_preset, methods_for_draft
    from onlinespec.bench.prompts import load_prompts, load_stream
    from onlinespec.bench.results import render_report
    from onlinespec.bench.runner import BenchSettings
    from onlinespec.drafts.registry import default_k

    # Everything that needs no model is checked first, so a typo costs no loading time.
    if args.learner != "static":
        raise UserError("--learner does not apply to bench: list the learners to compare in --methods")
    if args.draft_state or args.telemetry:
        raise UserError("bench keeps its own checkpoint and rounds.jsonl in --out: drop --draft-state and --telemetry")
    if args.resume and not args.out:
        raise UserError("--resume needs --out DIR: the folder of the interrupted run")
    preset = get_preset(args.preset)
    args.round_size = _pick(args.round_size, preset.round_size)  # before the learning flags become an OnlineConfig
    if args.prompts:
        stream = load_prompts(args.prompts, args.num_prompts, args.prompt_field, args.split)
    else:
        stream = load_stream(args.stream or preset.stream, _pick(args.num_prompts, preset.num_prompts))
    k = _pick(args.k, preset.k)  # None: the draft's own default
    settings = BenchSettings(
        methods=_methods(args.methods) if args.methods is not None else methods_for_draft(preset.methods, args.draft),
        stream=stream.name,
        max_new_tokens=_pick(args.max_new_tokens, preset.max_new_tokens),
        round_size=args.round_size,
        k=default_k(args.draft) if k is None else k,
        preset=args.preset,
        target=args.target,
        draft=args.draft,
        dtype=args.dtype,
        verify_cost=args.verify_cost,
        weight_layout=args.weight_layout,
        attention=args.attention,
        chat=not args.no_chat,
        seed=args.seed,
        online=online_config_from_args(args),
        tree=tree_config_from_args(args),
    )
    out = Path(args.out or f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    quiet_transformers()
    print(
        f"onlinespec bench: {len(stream.online)} prompts of {stream.name}, methods {','.join(settings.methods)}, "
        f"{settings.max_new_tokens} new tokens, k={settings.k}, draft {settings.draft}; writing to {out}/",
        file=sys.stderr,
    )
    try:
        results = run_bench(settings, stream, out, resume=args.resume, show_progress=not args.no_progress)
    except KeyboardInterrupt:
        print(
            f"onlinespec: bench interrupted; its finished rounds are saved in {out}/checkpoint. To continue, run the "
            f"same command with --out {out} --resume",
            file=sys.stderr,
        )
        return 130
    print(render_report(results))
    print(f"saved to {out}/: {', '.join(results['files'])}")
    if results["greedy_mismatches"] and results["config"].get("dtype_used") == "float32":
        margins = [d["margin"] for m in results["methods"].values() for d in m["first_divergences"] if "margin" in d]
        where = f" (the target's top-2 logit margin there: {', '.join(f'{x:.2g}' for x in margins)})" if margins else ""
        print(
            f"onlinespec: warning: {results['greedy_mismatches']} greedy outputs differ from ar's{where}; a margin "
            "near float rounding (about 1e-5) is a near-tie that a multi-token forward rounds differently, a clear "
            "one is a bug: see first_divergences in results.json",
            file=sys.stderr,
        )
    return 0
