"""`onlinespec warmup`: distil a draft head from the target on text available offline, then measure it.

Phases (each resumable): the target's greedy answers to warm-up prompts -> teacher passes (features + top-K) over
answers and CPython text -> distillation within a time/step budget -> held-out agreement and a speculative
decoding check on held-out prompts. The head lands in --out/KIND as config.json + model.safetensors (load it with
`--draft KIND:DIR`); warmup.json beside it records the command, seed, data and results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from itertools import zip_longest
from pathlib import Path

import torch

from onlinespec.errors import UserError

DATA_SOURCES = ("answers", "stdlib", "pydoc")
WARMUP_STREAMS = {"humaneval": 40, "spider": 40, "finance": 24}  # the first items of each stream (paper protocol)
EVAL_PER_STREAM = 2  # the last warm-up prompts of each stream are held out for the final check


def add_warmup_parser(commands) -> None:
    from onlinespec.drafts.heads import HEAD_KINDS
    from onlinespec.models import DEFAULT_MODEL

    p = commands.add_parser("warmup", help="distil a draft head from the target on offline text")
    p.add_argument("--target", default=DEFAULT_MODEL, help="target model spec (default: %(default)s)")
    p.add_argument("--draft", default="eagle", help=f"head kind: {', '.join(HEAD_KINDS)} (default: %(default)s)")
    p.add_argument("--out", required=True, help="directory for the head, checkpoints and caches")
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget (default: %(default)s)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0 = time budget only)")
    p.add_argument("--data", default="answers,stdlib,pydoc", help=f"sources from {', '.join(DATA_SOURCES)}")
    p.add_argument("--answers", type=int, default=48, help="warm-up prompts the target answers (default: %(default)s)")
    p.add_argument("--answer-tokens", type=int, default=128, help="max tokens of each target answer")
    p.add_argument("--corpus-tokens", type=int, default=120_000, help="tokens taken from stdlib + pydoc")
    p.add_argument("--seq-len", type=int, default=256, help="corpus sequence length (default: %(default)s)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens per batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--unroll", type=int, default=2, help="EAGLE training passes on its own features")
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


def _warmup_prompts() -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts) from the warm-up slices of the prompt streams (bench/prompts.py)."""
    from onlinespec.bench.prompts import STREAMS

    per_stream, held = [], []
    for name, count in WARMUP_STREAMS.items():
        prompts = STREAMS[name]()[:count]
        per_stream.append(prompts[: count - EVAL_PER_STREAM])
        held += prompts[count - EVAL_PER_STREAM :]
    # round robin over the streams, so the first N training prompts cover every domain
    train = [p for group in zip_longest(*per_stream) for p in group if p is not None]
    return train, held


def _fingerprint(sequences: list[list[int]], top_k: int) -> str:
    digest = hashlib.sha256(json.dumps([top_k, sequences]).encode()).hexdigest()
    return digest[:12]


def cmd_warmup(args: argparse.Namespace) -> int:
    from onlinespec.decoding.config import GenerationConfig
    from onlinespec.drafts.head_store import load_into, read_head, save_head
    from onlinespec.drafts.heads import HEAD_KINDS, build_head
    from onlinespec.models import load_model
    from onlinespec.pipeline import Pipeline
    from onlinespec.warmup.corpus import chunked_token_sequences, generate_answers, pydoc_texts, stdlib_texts
    from onlinespec.warmup.distill import DistillConfig, agreement, choose_draft_vocab, distill
    from onlinespec.warmup.teacher import teacher_batches

    if args.draft not in HEAD_KINDS:
        raise UserError(f"warmup trains heads: --draft must be one of {', '.join(HEAD_KINDS)}, not '{args.draft}'")
    sources = [s.strip() for s in args.data.split(",") if s.strip()]
    if not sources or set(sources) - set(DATA_SOURCES):
        raise UserError(f"--data takes a comma list from {', '.join(DATA_SOURCES)}, got '{args.data}'")
    if min(args.seq_len, args.batch_tokens, args.top_k, args.unroll) < 1 or args.minutes <= 0:
        raise UserError("--seq-len, --batch-tokens, --top-k, --unroll and --minutes must be positive")
    if args.batch_tokens < args.seq_len:
        raise UserError("--batch-tokens must be at least --seq-len")
    out = Path(args.out)
    # One --out can hold several kinds: they share the answers and teacher caches, each has its own checkpoint.
    checkpoint = out / f"checkpoint-{args.draft}"
    if checkpoint.exists() and not args.resume:
        raise UserError(
            f"'{out}' holds an earlier {args.draft} warm-up: pass --resume to continue it, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    started = time.monotonic()

    loaded = load_model(args.target, "float32")
    target, tokenizer = loaded.model, loaded.tokenizer
    pipe = Pipeline(loaded, None)
    train_prompts, held_prompts = _warmup_prompts()
    sequences: list[list[int]] = []
    if "answers" in sources:
        sequences += generate_answers(pipe, train_prompts[: args.answers], args.answer_tokens, out / "answers.jsonl")
    corpus = []
    if "stdlib" in sources:
        corpus.append(stdlib_texts())
    if "pydoc" in sources:
        corpus.append(pydoc_texts())
    for texts in corpus:
        sequences += chunked_token_sequences(texts, tokenizer, args.seq_len, args.corpus_tokens // len(corpus))
    held = sequences[::20]  # every 20th sequence is held out for the agreement figure
    train = [s for i, s in enumerate(sequences) if i % 20]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cache = out / f"teacher-{_fingerprint(sequences, args.top_k)}"
    teacher_s = time.monotonic()
    train_batches = teacher_batches(target, train, args.batch_tokens, args.top_k, pad, cache / "train")
    held_batches = teacher_batches(target, held, args.batch_tokens, args.top_k, pad, cache / "held")
    teacher_s = time.monotonic() - teacher_s

    vocab, coverage = None, 1.0
    if args.draft_vocab:
        always = sorted(pipe.eos_ids)
        vocab, coverage = choose_draft_vocab(train_batches, args.draft_vocab, always)
    head = build_head(args.draft, target, vocab, **({"layout": args.eagle_layout} if args.draft == "eagle" else {}))
    if hasattr(head, "unroll"):
        head.unroll = args.unroll
    before = agreement(head, held_batches)

    def resume():
        if not (checkpoint / "trainer.pt").is_file():
            return None
        _, tensors = read_head(checkpoint / "head")
        load_into(head, tensors, str(checkpoint / "head"))
        print(f"onlinespec: resuming the warm-up from {checkpoint}", file=sys.stderr)
        return torch.load(checkpoint / "trainer.pt")

    cfg = DistillConfig(minutes=args.minutes, max_steps=args.steps, lr=args.lr, seed=args.seed)
    result = distill(head, train_batches, cfg, checkpoint, lambda d: save_head(d, head, target), resume)
    after = agreement(head, held_batches)
    decoding = _decoding_check(loaded, head, held_prompts, GenerationConfig(max_new_tokens=96, k=4))
    record = {
        "command": "onlinespec " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "target": args.target,
        "kind": args.draft,
        "seed": args.seed,
        "data": {
            "sources": sources,
            "warmup_prompts": {k: v - EVAL_PER_STREAM for k, v in WARMUP_STREAMS.items()},
            "answered_prompts": min(args.answers, len(train_prompts)) if "answers" in sources else 0,
            "sequences": len(train),
            "train_tokens": sum(b.tokens for b in train_batches),
            "held_out_tokens": sum(b.tokens for b in held_batches),
        },
        "draft_vocab": {"size": int(vocab.numel()) if vocab is not None else None, "top1_coverage": coverage},
        "teacher_s": teacher_s,
        "train_minutes": args.minutes,
        **result,
        "held_out_top1_agreement": {"untrained": before, "warmed_up": after},
        "held_out_decoding": decoding,
        "total_s": time.monotonic() - started,
    }
    save_head(out / args.draft, head, target, extra={"warmup": record})
    (out / args.draft / "warmup.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"warm-up done in {record['total_s'] / 60:.1f} min ({result['steps']} steps): held-out top-1 agreement "
        f"{_pct(before)} -> {_pct(after)} (per head output); decoding {len(held_prompts)} held-out prompts, "
        f"k=4: alpha {decoding['alpha']:.3f}, tau {decoding['tau']:.2f}. Head: {out / args.draft} "
        f"(use --draft {args.draft}:{out / args.draft})",
        file=sys.stderr,
    )
    return 0


def _pct(values: list[float]) -> str:
    return "/".join(f"{100 * v:.1f}%" for v in values)


def _decoding_check(loaded, head, prompts: list[str], cfg) -> dict:
    """Greedy speculative decoding of held-out prompts with the head: the accept-rate figure users care about."""
    from onlinespec.drafts.heads import HEAD_KINDS
    from onlinespec.pipeline import Pipeline

    draft = HEAD_KINDS[head.kind][1](head, name=head.kind)
    pipe = Pipeline(loaded, draft)
    drafted = accepted = tokens = forwards = 0
    for prompt in prompts:
        stats = pipe.generate(prompt, cfg).stats
        drafted += stats.drafted
        accepted += stats.accepted
        tokens += stats.new_tokens
        forwards += stats.target_forwards
    return {
        "prompts": len(prompts),
        "k": cfg.k,
        "alpha": accepted / max(drafted, 1),
        "tau": tokens / max(forwards, 1),
    }
