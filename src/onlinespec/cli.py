"""Command line: `onlinespec generate "PROMPT"`, `onlinespec bench`. Thin: parses flags and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from onlinespec.errors import UserError

EXIT_USER_ERROR = 2
LEARNING_RATE = 0.1  # OGD step on the clipped gradient; 1.0 was unstable on the embedded model (README)


def build_parser() -> argparse.ArgumentParser:
    from onlinespec.drafts import DEFAULT_DRAFT, DEFAULT_K
    from onlinespec.models import DEFAULT_MODEL, DTYPES

    parser = argparse.ArgumentParser(
        prog="onlinespec", description="Lossless speculative decoding with drafts that learn online."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate text for one prompt")
    gen.add_argument("prompt", help="the prompt text (wrapped in the chat template unless --no-chat)")
    gen.add_argument(
        "--target",
        default=DEFAULT_MODEL,
        help="target model: embedded name, local dir, .gguf file or hub id (default: %(default)s)",
    )
    gen.add_argument(
        "--draft",
        default=DEFAULT_DRAFT,
        help="draft: auto, eagle[:DIR], medusa[:DIR], hydra[:DIR], layerskip:N, a model spec sharing the target's "
        "tokenizer, or none (default: %(default)s = the bundled EAGLE head for the embedded model, else layerskip:4)",
    )
    gen.add_argument(
        "--mode",
        choices=("spec", "ar"),
        default="spec",
        help="spec = speculative decoding, ar = plain autoregressive (default: %(default)s)",
    )
    gen.add_argument("--k", type=int, default=DEFAULT_K, help="drafted tokens per verify step (default: %(default)s)")
    add_tree_flags(gen)
    gen.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    gen.add_argument("--top-k", type=int, default=0, help="0 = off (default: %(default)s)")
    gen.add_argument("--top-p", type=float, default=1.0, help="1 = off (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="(default: %(default)s)")
    gen.add_argument("--no-chat", action="store_true", help="use the prompt as raw text, no chat template")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    add_learning_flags(gen)
    from onlinespec.warmup.command import add_warmup_parser

    add_warmup_parser(commands)

    from onlinespec.bench.command import add_bench_parser

    add_bench_parser(commands)

    from onlinespec.export_command import add_export_parser

    add_export_parser(commands)

    from onlinespec.serve.command import add_serve_parser  # no FastAPI import until `serve` runs

    add_serve_parser(commands)
    return parser


def add_tree_flags(parser: argparse.ArgumentParser) -> None:
    """Draft tree flags (decoding/tree.py), shared by every command that decodes."""
    from onlinespec.decoding.tree import TREE_KINDS

    group = parser.add_argument_group("draft trees (head drafts, greedy only)")
    group.add_argument(
        "--tree",
        choices=TREE_KINDS,
        default="chain",
        help="chain = k tokens in a line; static = EAGLE-1's 25-node tree; dynamic = EAGLE-2 (default: %(default)s)",
    )
    group.add_argument("--tree-depth", type=int, default=5, help="max tree depth (default: %(default)s)")
    group.add_argument("--tree-top-k", type=int, default=4, help="dynamic: children per expansion (default: 4)")
    group.add_argument("--tree-tokens", type=int, default=24, help="dynamic: nodes kept (default: %(default)s)")


def tree_config_from_args(args: argparse.Namespace):
    from onlinespec.decoding.tree import TreeConfig

    return TreeConfig(kind=args.tree, depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens)


def add_learning_flags(parser: argparse.ArgumentParser, default_learner: str = "static") -> None:
    """Flags of the online learner (SPEC.md §2), shared by every command that decodes."""
    from onlinespec.online.learners import LEARNERS
    from onlinespec.online.losses import LOSSES
    from onlinespec.online.session import SCHEDULES

    group = parser.add_argument_group("online learning of the draft")
    group.add_argument(
        "--learner",
        choices=tuple(LEARNERS),
        default=default_learner,
        help="static = no learning; sgd-momentum and adamw are ablations (default: %(default)s)",
    )
    group.add_argument("--lr", type=float, default=LEARNING_RATE, help="eta (default: %(default)s)")
    group.add_argument("--round-size", type=int, default=8, help="requests per round (default: %(default)s)")
    group.add_argument(
        "--round-tokens",
        type=int,
        default=0,
        help="if > 0, a round ends after this many new tokens instead (default: %(default)s)",
    )
    group.add_argument("--passes", type=int, default=1, help="gradient steps per round (default: %(default)s)")
    group.add_argument(
        "--clip", type=float, default=1.0, help="global gradient-norm clip, 0 = off (default: %(default)s)"
    )
    group.add_argument(
        "--radius",
        type=float,
        default=0.0,
        help="project onto this L2 ball around the warm start, 0 = off (default: %(default)s)",
    )
    group.add_argument("--experts", type=int, default=3, help="ensemble size (default: %(default)s)")
    group.add_argument("--gamma", type=float, default=1.0, help="Hedge rate (default: %(default)s)")
    group.add_argument("--loss", choices=LOSSES, default="forward_kl", help="(default: %(default)s)")
    group.add_argument(
        "--train-positions",
        choices=("all", "mismatch"),
        default="all",
        help="verified positions to learn from (default: %(default)s)",
    )
    group.add_argument(
        "--feedback-top-k", type=int, default=64, help="entries of p kept per position, 0 = full (default: %(default)s)"
    )
    group.add_argument("--schedule", choices=SCHEDULES, default="overlap", help="(default: %(default)s)")
    group.add_argument(
        "--draft-state",
        default=None,
        metavar="DIR",
        help="load the evolving draft and learner from DIR and save them there",
    )
    group.add_argument("--telemetry", default=None, metavar="FILE", help="append per-round JSON lines to FILE")


def online_config_from_args(args: argparse.Namespace):
    from onlinespec.online.learners import LearnerConfig
    from onlinespec.online.session import OnlineConfig

    return OnlineConfig(
        learner=args.learner,
        learner_cfg=LearnerConfig(
            lr=args.lr, clip=args.clip, radius=args.radius, passes=args.passes, experts=args.experts, gamma=args.gamma
        ),
        round_requests=args.round_size,
        round_tokens=args.round_tokens,
        loss=args.loss,
        positions=args.train_positions,
        top_k=args.feedback_top_k,
        schedule=args.schedule,
        state_dir=args.draft_state,
        telemetry=args.telemetry,
    )


def wants_learning(args: argparse.Namespace) -> bool:
    return args.learner != "static" or args.draft_state is not None


def _quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cmd_generate(args: argparse.Namespace) -> int:
    from onlinespec.decoding.config import GenerationConfig
    from onlinespec.decoding.sampling import SamplingConfig
    from onlinespec.pipeline import Pipeline
    from onlinespec.text_stream import TextStream

    # Check everything that needs no model first, so a typo costs no loading time.
    if not args.prompt.strip():
        raise UserError("the prompt is empty: give some text to continue")
    cfg = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        k=args.k,
        seed=args.seed,
        stop=tuple(args.stop),
        sampling=SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p),
        tree=tree_config_from_args(args),
    )
    online_cfg = online_config_from_args(args) if wants_learning(args) else None
    if online_cfg is not None:  # one call is one round, learned after the text is out: nothing to overlap with
        online_cfg = replace(online_cfg, schedule="sync")
    _quiet_transformers()
    draft = args.draft if args.mode == "spec" else "none"
    pipe = Pipeline.load(target=args.target, draft=draft, dtype=args.dtype)
    if online_cfg is not None:
        pipe.enable_learning(online_cfg)
    generation = pipe.start(pipe.encode(args.prompt, chat=not args.no_chat), cfg, args.mode)
    if args.json:
        result = generation.result()
    else:
        stream = TextStream(pipe.tokenizer, cfg.stop)
        for _ in generation:
            sys.stdout.write(stream.push(generation.stop.token_ids))
            sys.stdout.flush()
        result = generation.result()
        sys.stdout.write(stream.finish(result.text) + "\n")
    learned = None
    if pipe.online is not None:  # one generate call is one round: learn from it, publish, save
        learned = pipe.online.close(end_round=True)
    if args.json:
        payload = result.to_dict()
        payload["config"] = {
            "target": args.target,
            "draft": draft,
            "mode": args.mode,
            "k": args.k,
            "dtype": args.dtype,
            "learner": args.learner,
        }
        if learned is not None:
            payload["learning"] = learned
        print(json.dumps(payload))
        return 0
    s = result.stats
    print(
        f"[{args.mode}] {s.new_tokens} tokens in {s.wall_s:.2f} s = {s.tokens_per_s:.1f} tok/s | "
        f"tau {s.tau:.2f} alpha {s.alpha:.2f} | {s.target_forwards} target forwards | "
        f"finish: {result.finish_reason}",
        file=sys.stderr,
    )
    if learned is not None:
        print(
            f"[{args.learner}] round {learned['round']}: loss {learned.get('loss', float('nan')):.4f}, "
            f"update {learned.get('update_s', 0.0):.2f} s"
            + (f", saved to {args.draft_state}" if args.draft_state else ""),
            file=sys.stderr,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "warmup":
            from onlinespec.warmup.command import cmd_warmup

            return cmd_warmup(args)
        if args.command == "bench":
            from onlinespec.bench.command import cmd_bench

            return cmd_bench(args)
        if args.command == "export":
            from onlinespec.export_command import cmd_export

            return cmd_export(args)
        if args.command == "serve":
            from onlinespec.serve.command import cmd_serve

            return cmd_serve(args)
    except UserError as exc:
        print(f"onlinespec: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("onlinespec: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
