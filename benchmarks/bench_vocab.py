"""Would a larger draft vocabulary help? The bundled EAGLE head decoded with its reduced vocabulary and with the
target's full vocabulary (the upper bound of growing it online), on the same prompts, interleaved (issue 11.4).

    python benchmarks/bench_vocab.py --stream writingbench --num-prompts 6 --out runs/vocab

The head's logits are the target's frozen LM-head rows applied to its output, so the full vocabulary needs no
training: every row a grown vocabulary could add is already there. Greedy, in `--dtype auto`'s pick (recorded in
results.json), k = 2, chat-wrapped prompts from the stream's online slice; `--target` and `--draft eagle:DIR`
measure another target's head. Prints and saves tau, the out-of-vocabulary rate of the target's
tokens, and seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from onlinespec import GenerationConfig
from onlinespec.bench.prompts import STREAM_NAMES, load_stream
from onlinespec.decoding.metrics import RequestStats
from onlinespec.drafts.head_parts import DraftVocab
from onlinespec.models import DEFAULT_MODEL
from onlinespec.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="writingbench", choices=STREAM_NAMES)
    parser.add_argument("--num-prompts", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--out", default="runs/vocab")
    parser.add_argument("--target", default=DEFAULT_MODEL, help="embedded name, hub id or local folder")
    parser.add_argument("--draft", default="eagle", help="a head draft spec: eagle (the bundled head) or eagle:DIR")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipe = Pipeline.load(args.target, draft=args.draft)
    head = pipe.draft.model
    vocabs = {"reduced": head.vocab, "full": DraftVocab(pipe.target.model.get_output_embeddings(), None)}
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, k=args.k)
    stats = {name: RequestStats.zero() for name in vocabs}
    seconds = dict.fromkeys(vocabs, 0.0)
    outside, generated = 0, 0
    for prompt in load_stream(args.stream).online[: args.num_prompts]:
        ids = pipe.encode(prompt.text)
        for name, vocab in vocabs.items():
            head.vocab = vocab
            tic = time.perf_counter()
            result = pipe.start(ids, cfg).result()
            seconds[name] += time.perf_counter() - tic
            stats[name] = stats[name] + result.stats
            if name == "reduced":  # the target's own tokens (greedy: both runs emit the same ones)
                outside += int((vocabs["reduced"].to_draft_ids(torch.tensor(result.token_ids)) < 0).sum())
                generated += len(result.token_ids)
    head.vocab = vocabs["reduced"]
    rows = {
        name: {"tau": s.tau, "alpha": s.alpha, "seconds": seconds[name], "vocab": vocabs[name].size}
        for name, s in stats.items()
    }
    report = {
        "target": args.target,
        "draft": args.draft,
        "dtype": pipe.target.dtype,
        "stream": args.stream,
        "prompts": args.num_prompts,
        "max_new_tokens": args.max_new_tokens,
        "k": args.k,
        "oov_rate_of_target_tokens": outside / max(generated, 1),
        "methods": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, row in rows.items():
        tau, alpha = row["tau"], row["alpha"]
        print(f"{name:8s} vocab {row['vocab']:6d}  tau {tau:.3f}  alpha {alpha:.3f}  {row['seconds']:.1f} s")
    print(f"target tokens outside the reduced vocabulary: {report['oov_rate_of_target_tokens']:.1%}; saved {out}")


if __name__ == "__main__":
    main()
