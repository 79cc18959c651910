"""`onlinespec generate "PROMPT"`: decode one prompt, streaming its text or printing one JSON object."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from onlinespec.commands.common import owned_directory, quiet_transformers
from onlinespec.commands.flags import (
    add_draft_flags,
    add_learning_flags,
    add_model_flags,
    add_tree_flags,
    online_config_from_args,
    tree_config_from_args,
    wants_learning,
)
from onlinespec.errors import UserError

NAME = "generate"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(NAME, help="generate text for one prompt")
    gen.add_argument("prompt", help="the prompt text (wrapped in the chat template unless --no-chat)")
    add_model_flags(
        gen, target_help="target model: embedded name, local dir, .gguf file or hub id (default: %(default)s)"
    )
    add_draft_flags(gen)
    gen.add_argument(
        "--mode",
        choices=("spec", "ar"),
        default="spec",
        help="spec = speculative decoding, ar = plain autoregressive (default: %(default)s)",
    )
    add_tree_flags(gen)
    gen.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    gen.add_argument("--top-k", type=int, default=0, help="0 = off (default: %(default)s)")
    gen.add_argument("--top-p", type=float, default=1.0, help="1 = off (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--no-chat", action="store_true", help="use the prompt as raw text, no chat template")
    gen.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    add_learning_flags(gen)


def run(args: argparse.Namespace) -> int:
    with owned_directory(args.draft_state, "draft state"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from onlinespec.decoding.config import GenerationConfig
    from onlinespec.decoding.sampling import SamplingConfig
    from onlinespec.models.attention import attention_kind
    from onlinespec.models.weight_layout import weight_layout
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
    quiet_transformers()
    draft = args.draft if args.mode == "spec" else "none"
    pipe = Pipeline.load(
        target=args.target,
        draft=draft,
        dtype=args.dtype,
        verify_cost=args.verify_cost,
        weight_layout=args.weight_layout,
        attention=args.attention,
    )
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
            "k": pipe.engine.chain_length(cfg) if pipe.engine is not None else None,
            "dtype": pipe.target.dtype,  # what --dtype chose
            "weight_layout": weight_layout(pipe.target.model),  # what --weight-layout chose
            "attention": attention_kind(pipe.target.model),  # models/attention.py: sdpa or folded
            "learner": args.learner,
        }
        if learned is not None:
            payload["learning"] = learned
        print(json.dumps(payload))
        return 0
    s = result.stats
    print(
        f"[{args.mode}, {pipe.target.dtype}] {s.new_tokens} tokens in {s.wall_s:.2f} s = {s.tokens_per_s:.1f} tok/s | "
        f"tau {s.tau:.2f} alpha {s.alpha:.2f} | {s.target_forwards} target forwards | "
        f"finish: {result.finish_reason}",
        file=sys.stderr,
    )
    if learned is not None:
        if "index_entries" in learned:  # a lookup draft: it learned by counting, there is no loss
            what = f"index {learned['index_entries']} entries (~{learned['index_bytes'] / 1e6:.1f} MB)"
        else:
            what = f"loss {learned.get('loss', float('nan')):.4f}"
        print(
            f"[{learned['learner']}] round {learned['round']}: {what}, update {learned.get('update_s', 0.0):.2f} s"
            + (f", saved to {args.draft_state}" if args.draft_state else ""),
            file=sys.stderr,
        )
    return 0
