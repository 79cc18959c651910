"""Our drafts against what HF transformers users already have: `generate()` and prompt-lookup decoding.

    python benchmarks/bench_vs_hf.py                                    # 4 prompts x 3 streams x 96 tokens
    python benchmarks/bench_vs_hf.py --prompts 1 --max-new-tokens 24   # quick end-to-end check

Methods, interleaved per prompt in one process (greedy, the same target weights and dtype):
- hf_plain: `model.generate()`; hf_lookup: `model.generate(prompt_lookup_num_tokens=N)` (no draft model);
- ours_ar: our autoregressive path; one `ours:DRAFT@K` per `--drafts` entry (speculative, chain of K);
  `DRAFT@K@gate=G` sets a hybrid draft's head gate (`head_min_confidence`, drafts/hybrid.py) to G;
  `DRAFT@K@headk=H` caps a hybrid draft's head chain at H tokens (`head_k`, default HEAD_K);
  `DRAFT@K@dtype=float32|bfloat16` runs that entry on a second copy of the target loaded in that dtype (the
  before/after of a dtype change in one interleaved run; HF's methods and ours_ar stay in --dtype);
  `DRAFT@K@tree=dynamic|static` drafts a candidate tree of depth K (head drafts and the hybrid, whose lookup
  matches stay chains of up to K; decoding/tree.py defaults: dynamic = EAGLE-2's top-4 expansion kept to 24 nodes,
  static = EAGLE-1's 25-node shape) instead of a chain; `@nodes=N` keeps N nodes of a dynamic tree;
  `DRAFT@K@cost=off` verifies every drafted token (default `auto`: proposals cut to what this machine's measured
  verify cost pays, decoding/verify_cost.py); `DRAFT@K@layout=standard|transposed` runs that entry with the target's
  weights in that layout (default: `--weight-layout`, models/weight_layout.py); `DRAFT@K@attn=sdpa|folded` runs
  that entry's attention that way (default: what `--attention` chose, models/attention.py;
  HF's methods always run SDPA, as users load the model); `DRAFT@K@mask=per-layer` folds the attention mask in
  every layer and `DRAFT@K@siblings=off` packs q/k/v and gate/up one by one, as before 2026-12-05 (the before/after
  of those two changes in one interleaved run; the verify-cost curve stays the one measured now). Options combine:
  `hybrid@2@gate=0@cost=off`. The entry `ar` (options allowed: `ar@layout=standard@attn=sdpa`) is one more
  autoregressive run.
Prompts: the first `--prompts` online items of each `--streams` source (chat-wrapped, as `onlinespec bench`).
tokens/s = new tokens / wall seconds of the whole call, summed over prompts per stream. Greedy equality: every
ours_* against ours_ar, hf_lookup against hf_plain, ours_ar against hf_plain (in reduced precision a k-token and a
1-token forward may round differently: the mismatch count says how often that changed the text).
Writes results.json and report.md to --out. Run with OMP_NUM_THREADS set and an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from bench_engine import first_diff, run_hf  # benchmarks/ is on sys.path when a script here runs
from bench_siblings import ungroup_siblings
from tqdm import tqdm
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from onlinespec import GenerationConfig, Pipeline
from onlinespec.bench.prompts import source_stream
from onlinespec.decoding.tree import TreeConfig
from onlinespec.drafts import make_draft
from onlinespec.models import DEFAULT_MODEL, cache_root
from onlinespec.models.attention import ATTENTION_MODES, ATTENTION_NAME, SDPA, folded_mask, set_attention, use_attention
from onlinespec.models.packed_linear import pack_linears
from onlinespec.models.resolve import LoadedModel, load_model
from onlinespec.models.weight_layout import PACKED, STANDARD, WEIGHT_LAYOUT_MODES, set_weight_layout, use_weight_layout
from onlinespec.prompting import encode_prompt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=DEFAULT_MODEL, help="target model spec (e.g. qwen2.5-coder-1.5b)")
    p.add_argument("--streams", default="humaneval,spider,writingbench", help="comma-separated prompt sources")
    p.add_argument("--prompts", type=int, default=4, help="first N online prompts of each stream")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--drafts", default="eagle@2,hybrid@2,hybrid@3", help="comma-separated DRAFT@K")
    p.add_argument("--hf-lookup", type=int, default=5, help="HF prompt_lookup_num_tokens (0 = leave hf_lookup out)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="every method's dtype; auto = what onlinespec's --dtype auto picks on this machine (default: %(default)s)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--weight-layout",
        default="auto",
        choices=WEIGHT_LAYOUT_MODES,
        help="our methods' weight layout (models/weight_layout.py); HF's methods always run the standard one",
    )
    p.add_argument(
        "--attention",
        default="auto",
        choices=ATTENTION_MODES,
        help="our methods' attention (models/attention.py); HF's methods always run SDPA",
    )
    p.add_argument("--out", default="bench-out/vs-hf")
    return p.parse_args(argv)


def run_ours(pipe: Pipeline, ids: torch.Tensor, n_new: int, k: int, mode: str, tree: TreeConfig | None = None) -> dict:
    """One request; `tree`: draft a candidate tree (depth k) instead of a chain of k."""
    cfg = GenerationConfig(max_new_tokens=n_new, k=k, tree=tree or TreeConfig())
    tic = time.perf_counter()
    result = pipe.start(ids, cfg, mode=mode).result()
    seconds = time.perf_counter() - tic
    s = result.stats
    return {
        "tokens": result.token_ids,
        "seconds": seconds,
        "forwards": s.target_forwards,
        "drafted": s.drafted,
        "accepted": s.accepted,
        "draft_s": s.draft_s,
        "target_s": s.target_s,
    }


def summarise(rows: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per method over rows: new tokens, wall s, tokens/s, and tau / alpha for speculative ones."""
    out: dict[str, dict] = {}
    for m in methods:
        runs = [r[m] for r in rows]
        n, secs = sum(len(x["tokens"]) for x in runs), sum(x["seconds"] for x in runs)
        entry = {"new_tokens": n, "wall_s": round(secs, 3), "tokens_per_s": n / secs if secs else 0.0}
        if "forwards" in runs[0]:
            drafted = sum(x["drafted"] for x in runs)
            entry["tau"] = n / max(1, sum(x["forwards"] for x in runs))
            entry["alpha"] = sum(x["accepted"] for x in runs) / drafted if drafted else 0.0
            steps = max(1, sum(x["forwards"] for x in runs))  # per target forward: what drafting and verifying cost
            entry["draft_ms_per_step"] = 1000 * sum(x["draft_s"] for x in runs) / steps
            entry["target_ms_per_step"] = 1000 * sum(x["target_s"] for x in runs) / steps
        out[m] = entry
    for m in methods:
        for base in ("hf_plain", "hf_lookup", "ours_ar"):
            if base in out and out[base]["tokens_per_s"]:
                out[m][f"vs_{base}"] = out[m]["tokens_per_s"] / out[base]["tokens_per_s"]
    return out


def equality(rows: list[dict], methods: list[str]) -> dict[str, dict]:
    pairs = [(m, "ours_ar") for m in methods if m.startswith("ours:")]
    pairs += [(a, b) for a, b in (("hf_lookup", "hf_plain"), ("ours_ar", "hf_plain")) if a in methods]
    out = {}
    for a, b in pairs:
        bad = [(r["stream"], r["prompt"], first_diff(r[a]["tokens"], r[b]["tokens"])) for r in rows]
        bad = [x for x in bad if x[2] is not None]
        out[f"{a} vs {b}"] = {"compared": len(rows), "mismatching": len(bad), "first": bad[0] if bad else None}
    return out


def report(args: argparse.Namespace, per_stream: dict, eq: dict, methods: list[str]) -> str:
    lines = [
        f"# bench_vs_hf: {args.prompts} prompts per stream x {args.max_new_tokens} new tokens, {args.dtype}, "
        f"{torch.get_num_threads()} threads, greedy",
        "",
    ]
    for stream, summary in per_stream.items():
        lines += [
            f"## {stream}",
            "",
            "| method | tokens/s | vs hf_plain | vs hf_lookup | vs ours_ar | tau | draft / target ms per step |",
        ]
        lines += ["|---|---:|---:|---:|---:|---:|---:|"]
        for m in methods:
            s = summary[m]
            cells = [
                f"{s.get(f'vs_{b}', 0):.3f}" if f"vs_{b}" in s else "-" for b in ("hf_plain", "hf_lookup", "ours_ar")
            ]
            tau = f"{s['tau']:.3f}" if "tau" in s else "-"
            ms = f"{s['draft_ms_per_step']:.1f} / {s['target_ms_per_step']:.1f}" if "tau" in s else "-"
            lines.append(f"| {m} | {s['tokens_per_s']:.2f} | {' | '.join(cells)} | {tau} | {ms} |")
        lines.append("")
    lines += ["| greedy equality | compared | mismatching | first (stream, prompt, position) |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {e['compared']} | {e['mismatching']} | {e['first'] or '-'} |" for name, e in eq.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    target = load_model(args.target, args.dtype, attention=SDPA)
    args.dtype = target.dtype  # what `auto` chose: HF's methods run the same weights in it, the report names it
    ours_layout = use_weight_layout(target.model, args.weight_layout, cache_root())
    ours_attention = use_attention(target.model, args.attention, cache_root())
    ar = Pipeline(target, None)
    drafts: dict[str, tuple[Pipeline, int]] = {}
    trees: dict[str, TreeConfig] = {}  # entries drafting a tree instead of a chain
    curves: dict[str, list[float] | None] = {}  # the verify-cost curve each draft's pipeline used
    # HF's methods run the weights as users load them; ours as the CLI does, or as an entry's layout= says
    layouts = {"hf_plain": STANDARD, "hf_lookup": STANDARD, "ours_ar": ours_layout}
    attentions = {"hf_plain": SDPA, "hf_lookup": SDPA, "ours_ar": ours_attention}  # None: left as loaded
    before = {}  # entry -> (mask folded in every layer, siblings packed one by one): the code before 2026-12-05
    others: dict[str, LoadedModel] = {}  # the same target in another dtype, for entries with dtype=, loaded once

    def target_in(dtype: str | None) -> LoadedModel:
        if dtype in (None, target.dtype):
            return target
        if dtype not in others:
            others[dtype] = load_model(args.target, dtype, args.weight_layout, args.attention)
        return others[dtype]

    for entry in args.drafts.split(","):
        spec, *options = entry.split("@")
        if spec == "ar":
            options = ["1", *options]
        k, settings = (options[0] if options else ""), dict(o.split("=", 1) for o in options[1:])
        loaded = target_in(settings.get("dtype"))
        # an entry in another dtype keeps the layout its own load chose (None: run() leaves it alone)
        layouts[f"ours:{entry}"] = settings.get("layout", ours_layout) if loaded is target else None
        attentions[f"ours:{entry}"] = settings.get("attn", ours_attention) if loaded is target else None
        before[f"ours:{entry}"] = (settings.get("mask") == "per-layer", settings.get("siblings") == "off")
        if loaded is target:
            set_weight_layout(target.model, layouts[f"ours:{entry}"])  # the verify cost is measured in it
            set_attention(target.model, attentions[f"ours:{entry}"])
        if spec == "ar":
            drafts[f"ours:{entry}"] = (ar if loaded is target else Pipeline(loaded, None), 0)
            continue
        draft = make_draft(spec, loaded)
        if "gate" in settings:
            draft.head_min_confidence = float(settings["gate"])  # a hybrid draft's head gate (drafts/hybrid.py)
        if "headk" in settings:
            draft.head_k = int(settings["headk"])  # a hybrid draft's head chain cap (drafts/hybrid.py)
        pipe = Pipeline(loaded, draft)
        curve = pipe.use_verify_cost(settings.get("cost", "auto"))  # decoding/verify_cost.py, as the CLI's default
        curves[f"ours:{entry}"] = None if curve is None else list(curve.relative)
        drafts[f"ours:{entry}"] = (pipe, int(k or 2))
        if "tree" in settings:  # a head draft's candidate tree of depth K (decoding/tree.py)
            nodes = int(settings.get("nodes", TreeConfig.total_tokens))  # a dynamic tree's nodes kept
            trees[f"ours:{entry}"] = TreeConfig(settings["tree"], depth=int(k or 5), total_tokens=nodes)
    methods = ["hf_plain", *(["hf_lookup"] if args.hf_lookup else []), "ours_ar", *drafts]
    prompts = [
        (name, i, encode_prompt(target.tokenizer, p.chat()))
        for name in args.streams.split(",")
        for i, p in enumerate(source_stream(name).online[: args.prompts])
    ]

    def run(method: str, ids: torch.Tensor, n_new: int) -> dict:
        if layouts[method] is not None:
            set_weight_layout(target.model, layouts[method])  # a copy when it changes, before the clock starts
            set_attention(target.model, attentions[method])
            mask_per_layer, siblings_off = before.get(method, (False, False))
            AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask if mask_per_layer else folded_mask)
            if layouts[method] == PACKED and siblings_off:
                ungroup_siblings(target.model)
            elif layouts[method] == PACKED:
                pack_linears(target.model)  # groups siblings an earlier entry ran one by one (else a no-op)
        if method in ("hf_plain", "hf_lookup"):
            lookup = {"prompt_lookup_num_tokens": args.hf_lookup} if method == "hf_lookup" else {}
            tokens, seconds = run_hf(ar, ids, n_new, None, **lookup)
            return {"tokens": tokens, "seconds": seconds}
        if method == "ours_ar":
            return run_ours(ar, ids, n_new, 1, "ar")
        pipe, k = drafts[method]
        return run_ours(pipe, ids, n_new, max(k, 1), "spec" if k else "ar", trees.get(method))

    for m in methods:  # warm-up: one short call each
        run(m, prompts[0][2], 8)
    rows = []
    for stream, i, ids in tqdm(prompts, desc="prompts"):
        rows.append(
            {
                "stream": stream,
                "prompt": i,
                "prompt_tokens": int(ids.shape[0]),
                **{m: run(m, ids, args.max_new_tokens) for m in methods},
            }
        )
    per_stream = {s: summarise([r for r in rows if r["stream"] == s], methods) for s in args.streams.split(",")}
    per_stream["all"] = summarise(rows, methods)
    eq = equality(rows, methods)
    hybrid_steps = {m: dict(p.draft.steps) for m, (p, _) in drafts.items() if hasattr(p.draft, "steps")}
    text = report(args, per_stream, eq, methods)
    if hybrid_steps:
        text += "\nsteps drafted by each part of a hybrid draft (warm-up included): " + json.dumps(hybrid_steps) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "config": {
            **vars(args),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "verify_cost": curves,
            "weight_layout": layouts,
            "attention": attentions,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "loadavg": os.getloadavg(),
        },
        "summary": per_stream,
        "equality": eq,
        "hybrid_steps": hybrid_steps,
        "rows": [
            {k: ({**v, "seconds": round(v["seconds"], 4)} if isinstance(v, dict) else v) for k, v in r.items()}
            for r in rows
        ],
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(text)
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
