"""Command line: `onlinespec generate "PROMPT"`. Thin: parses flags and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys

from onlinespec.errors import UserError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    from onlinespec.drafts import DEFAULT_DRAFT
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
        help="draft: layerskip:N, a model spec sharing the target's tokenizer, or none (default: %(default)s)",
    )
    gen.add_argument(
        "--mode",
        choices=("spec", "ar"),
        default="spec",
        help="spec = speculative decoding, ar = plain autoregressive (default: %(default)s)",
    )
    gen.add_argument("--k", type=int, default=4, help="drafted tokens per verify step (default: %(default)s)")
    gen.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    gen.add_argument("--top-k", type=int, default=0, help="0 = off (default: %(default)s)")
    gen.add_argument("--top-p", type=float, default=1.0, help="1 = off (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="(default: %(default)s)")
    gen.add_argument("--no-chat", action="store_true", help="use the prompt as raw text, no chat template")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    return parser


def _quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def cmd_generate(args: argparse.Namespace) -> int:
    from onlinespec.decoding.config import GenerationConfig
    from onlinespec.decoding.sampling import SamplingConfig
    from onlinespec.pipeline import MODES, Pipeline
    from onlinespec.text_stream import TextStream

    # Check everything that needs no model first, so a typo costs no loading time.
    if not args.prompt.strip():
        raise UserError("the prompt is empty: give some text to continue")
    if args.mode not in MODES:
        raise UserError(f"unknown mode '{args.mode}'")
    cfg = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        k=args.k,
        seed=args.seed,
        stop=tuple(args.stop),
        sampling=SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p),
    )
    _quiet_transformers()
    pipe = Pipeline.load(target=args.target, draft=args.draft if args.mode == "spec" else "none", dtype=args.dtype)
    generation = pipe.start(pipe.encode(args.prompt, chat=not args.no_chat), cfg, args.mode)
    if args.json:
        result = generation.result()
        payload = result.to_dict()
        payload["config"] = {
            "target": args.target,
            "draft": args.draft if args.mode == "spec" else "none",
            "mode": args.mode,
            "k": args.k,
            "dtype": args.dtype,
        }
        print(json.dumps(payload))
        return 0
    stream = TextStream(pipe.tokenizer, cfg.stop)
    for _ in generation:
        sys.stdout.write(stream.push(generation.stop.token_ids))
        sys.stdout.flush()
    result = generation.result()
    sys.stdout.write(stream.finish(result.text) + "\n")
    s = result.stats
    print(
        f"[{args.mode}] {s.new_tokens} tokens in {s.wall_s:.2f} s = {s.tokens_per_s:.1f} tok/s | "
        f"tau {s.tau:.2f} alpha {s.alpha:.2f} | {s.target_forwards} target forwards | "
        f"finish: {result.finish_reason}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return cmd_generate(args)
    except UserError as exc:
        print(f"onlinespec: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("onlinespec: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
