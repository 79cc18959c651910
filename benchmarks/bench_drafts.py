"""Draft kinds head to head on the embedded default (issue 4): greedy, interleaved per prompt, same settings.

    python benchmarks/bench_drafts.py --draft eagle:heads/smollm2-135m-eagle ...

Prompts: the first N of the ONLINE slices of HumanEval and Spider (never seen by `onlinespec warmup`, which
trains on warm-up slices). Every method decodes every prompt in turn, so machine drift hits all alike; timings
include prefill. Reports tau, alpha, the draft cost per verify step relative to one autoregressive step (c),
tokens/s, speedup vs our autoregressive path, and greedy mismatches against it (must be 0 in fp32). Writes
results.json and report.md to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from onlinespec import GenerationConfig
from onlinespec.bench.prompts import source_stream
from onlinespec.bench.runner import prompt_ids
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.tree import TreeConfig
from onlinespec.drafts import make_draft
from onlinespec.models import load_model
from onlinespec.pipeline import Pipeline


def parse_method(spec: str) -> tuple[str, str, str, int | None]:
    """`NAME=DRAFT[@TREE][%K]` (tree: chain, static, dynamic; default chain; K overrides --k for this method)."""
    name, _, rest = spec.partition("=")
    rest, _, k = rest.partition("%")
    draft, _, tree = rest.partition("@")
    return name, draft, tree or "chain", int(k) if k else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--method",
        action="append",
        default=[],
        help="NAME=DRAFT[@chain|static|dynamic][%%K], repeatable (e.g. eagle-tree=eagle:DIR@dynamic, eagle2=eagle%%2)",
    )
    parser.add_argument("--per-domain", type=int, default=8, help="prompts from each of HumanEval and Spider")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--k", type=int, default=4, help="chain length (default: %(default)s)")
    parser.add_argument("--tree-depth", type=int, default=5)
    parser.add_argument("--tree-top-k", type=int, default=4)
    parser.add_argument("--tree-tokens", type=int, default=24)
    parser.add_argument("--out", default="bench-out/drafts")
    args = parser.parse_args()
    methods = [parse_method(m) for m in (args.method or ["layerskip=layerskip:4"])]

    loaded = load_model("smollm2-135m", "float32")
    prompts = [p for d in ("humaneval", "spider") for p in source_stream(d).online[: args.per_domain]]
    pipes = {"ar": Pipeline(loaded, None)}
    trees, ks = {}, {}
    for name, draft, tree, k in methods:
        pipes[name] = Pipeline(loaded, make_draft(draft, loaded))
        trees[name] = TreeConfig(tree, args.tree_depth, args.tree_top_k, args.tree_tokens)
        ks[name] = k or args.k
    totals = {name: RequestStats.zero() for name in pipes}
    mismatches = dict.fromkeys(pipes, 0)
    started = time.time()
    for i, prompt in enumerate(prompts):
        ids = prompt_ids(loaded.tokenizer, prompt)
        reference = None
        for name, pipe in pipes.items():
            tree = trees.get(name, TreeConfig())
            cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, k=ks.get(name, args.k), tree=tree)
            result = pipe.start(ids, cfg, mode="ar" if name == "ar" else "spec").result()
            totals[name] += result.stats
            if reference is None:
                reference = result.token_ids
            mismatches[name] += int(result.token_ids != reference)
        print(f"prompt {i + 1}/{len(prompts)} done ({time.time() - started:.0f} s)", flush=True)

    ar_step = totals["ar"].wall_s / totals["ar"].new_tokens
    rows = {}
    for name, t in totals.items():
        steps = t.target_forwards - t.requests  # verify steps (each request's prefill forward drafts nothing)
        rows[name] = {
            "tau": t.tau,
            "alpha": t.alpha if t.drafted else None,
            "c": (t.draft_s / steps) / ar_step if steps and name != "ar" else None,
            "tokens_per_s": t.tokens_per_s,
            "speedup": t.tokens_per_s * ar_step,
            "new_tokens": t.new_tokens,
            "mismatches": mismatches[name],
        }
    config = {
        "methods": {name: {"draft": d, "tree": tr, "k": ks[name]} for name, d, tr, _ in methods},
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "k": args.k,
        "tree": {"depth": args.tree_depth, "top_k": args.tree_top_k, "total_tokens": args.tree_tokens},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "wall_s": time.time() - started,
    }
    lines = [
        "| method | draft | tree | k | tau | alpha | c per step | tokens/s | speedup vs ar | mismatches |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for name, r in rows.items():
        draft, tree, k = config["methods"].get(name, {"draft": "none", "tree": "-", "k": "-"}).values()
        lines.append(
            f"| {name} | {draft} | {tree} | {k} | {r['tau']:.2f} | {fmt(r['alpha'], '.3f')} | {fmt(r['c'], '.2f')} | "
            f"{r['tokens_per_s']:.2f} | {r['speedup']:.2f}x | {r['mismatches']} |"
        )
    report = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"config": config, "methods": rows}, indent=2) + "\n")
    (out / "report.md").write_text(report)
    print(report)
    print(f"saved {out / 'results.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    main()
