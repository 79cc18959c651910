"""Held-out top-1 agreement of draft heads with the target, per drafted depth, on the same held-out text.

The held-out text is what `onlinespec warmup` holds out: every 20th of the target's answers, in the warm-up's
prompt order (the warm-up slices, then the `--prompts` file's prompts). Each head runs teacher-forced with as many
passes as depths asked (pass i > 1 drafts from its own features, as drafting ahead does), so depth 1 is the
warm-up's figure and depths 2..D are what a chain of D drafted tokens meets. Heads are compared on one set.

    python benchmarks/bench_head_agreement.py --answers RUN/answers.jsonl --prompts pool.jsonl \
        --head bundled --head new=RUN/eagle --depth 3 --out /work/runs/agreement

Prints a table and writes agreement.json in --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from onlinespec.bench.prompts import load_prompt_file
from onlinespec.drafts import make_draft
from onlinespec.models import DEFAULT_MODEL, load_model
from onlinespec.warmup.distill import agreement
from onlinespec.warmup.run import HELD_OUT_EVERY, warmup_prompts
from onlinespec.warmup.teacher import teacher_batches


def held_out_sequences(answers: Path, prompts: Path | None, limit: int) -> list[list[int]]:
    """Every 20th answered prompt in the warm-up's order (prompt + answer ids), up to `limit`."""
    done = {}
    for line in answers.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            done[row["prompt"]] = row["ids"]
    order = warmup_prompts()[0] + ([p.text for p in load_prompt_file(prompts)] if prompts else [])
    sequences = [done[p] for p in order if p in done]
    return sequences[::HELD_OUT_EVERY][:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", required=True, type=Path, help="answers.jsonl of a warm-up")
    parser.add_argument("--prompts", type=Path, help="the --prompts file that warm-up answered (its order)")
    parser.add_argument("--head", action="append", required=True, help="NAME=DIR, or 'bundled', repeatable")
    parser.add_argument("--depth", type=int, default=3, help="drafted depths to score (default: %(default)s)")
    parser.add_argument("--sequences", type=int, default=200, help="held-out sequences at most")
    parser.add_argument("--target", default=DEFAULT_MODEL)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    loaded = load_model(args.target, "float32")
    held = held_out_sequences(args.answers, args.prompts, args.sequences)
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    args.out.mkdir(parents=True, exist_ok=True)
    batches = teacher_batches(loaded.model, held, 4096, 32, pad, args.out / "teacher")
    tokens = sum(b.tokens for b in batches)
    results = {}
    for spec in args.head:
        name, _, directory = spec.partition("=")
        draft = make_draft("eagle" if name == "bundled" else f"eagle:{directory}", loaded)
        head = draft.model
        head.unroll = args.depth  # score D passes: pass i drafts from the head's own features
        with torch.no_grad():
            results[name] = agreement(head, batches)
        print(f"{name:>12}: " + " / ".join(f"{100 * a:.1f} %" for a in results[name]), flush=True)
    record = {"held_out_sequences": len(held), "held_out_tokens": tokens, "depths": args.depth, "heads": results}
    (args.out / "agreement.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(held)} held-out sequences, {tokens} tokens; depths 1..{args.depth}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
