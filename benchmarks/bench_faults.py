"""Fault run of `onlinespec serve` with `--draft-state`: what each fault loses, measured on real server processes.

    PYTHONPATH=src python benchmarks/bench_faults.py                         # tiny random model, ~1-2 min on 2 cores
    PYTHONPATH=src python benchmarks/bench_faults.py --kills 5 --out bench-out/faults5
    PYTHONPATH=src python benchmarks/bench_faults.py --target smollm2-135m --draft layerskip:4   # the embedded model

Every scenario starts `python -m onlinespec serve` on a free loopback port (127.0.0.1) with `--learner ogd
--round-size 1` (every learned request ends a round) and the server's own defaults otherwise (overlapped updates,
snapshots written in a background thread), sends a bounded number of short greedy requests, and reads the truth
from the server itself (`/draft`: round and sha256 of the live draft; `/health`: round and checkpoint counts;
`/metrics`) and from the state directory. "Published" is the round the server had published when the fault hit;
"restored" is the round a restarted server on the same directory serves; lost = published - restored. Where a
restart restores a snapshot, its live draft digest is checked against the digest of that snapshot's
draft.safetensors.

Scenarios:
  sigkill      SIGKILL right after a round boundary, i.e. while that round's snapshot is being written in the
               background; restart; repeated --kills times on the same directory (one of them mid-request).
  corrupt      bytes flipped in the newest snapshot's draft.safetensors; restart: the previous snapshot is used
               and the log names the fallback.
  second-owner a second `serve` and an `onlinespec generate --draft-state` on the directory a running server owns:
               both refused (exit code, message); the first server keeps serving and learning.
  unwritable   the state directory is moved aside and a file put in its place mid-run: requests still served,
               failures counted in /health and /metrics, shutdown reports it in one line, a restart (directory
               put back) restores the last good snapshot.
  sigterm      graceful shutdown: the final snapshot is written, nothing is lost.

By default the target is a tiny random Llama with a word-level tokenizer written to --out (fast; nothing to
download). Prints a table; writes results.json, report.md and every server log to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from onlinespec.online.state_store import load_state
from onlinespec.serve.worker import tensors_digest

WORDS = "the cat sat on a mat dog ran to big red house and blue fish ate".split()  # noqa: SIM905
PROMPTS = ["the cat sat", "a big red house", "dog ran to the mat", "blue fish ate"]
SCENARIOS = ("sigkill", "corrupt", "second-owner", "unwritable", "sigterm")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="tiny", help="'tiny' (a random model made here) or any --target spec")
    p.add_argument("--draft", default="layerskip:2")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=8, help="tokens per request")
    p.add_argument("--requests", type=int, default=3, help="learned requests (= rounds) before each fault")
    p.add_argument("--kills", type=int, default=3, help="SIGKILL/restart cycles in the sigkill scenario")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset, in this order")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for a server to come up")
    p.add_argument("--request-timeout", type=float, default=120.0, help="client timeout of one request")
    p.add_argument("--out", default="bench-out/faults")
    return p.parse_args()


def make_tiny_model(path: Path, seed: int = 0) -> None:
    """A tiny random Llama (onlinespec/models/tiny.py) with a word-level tokenizer over WORDS and no
    end-of-sequence token, so every answer runs to max_tokens."""
    from onlinespec.models.tiny import save_tiny_model_dir

    save_tiny_model_dir(path, WORDS, seed=seed, eos=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `python -m onlinespec serve` process on 127.0.0.1 owning `state`; stdout and stderr go to `log`."""

    def __init__(self, args: argparse.Namespace, state: Path, log: Path, *flags: str) -> None:
        self.args, self.log_path = args, log
        self.url = f"http://127.0.0.1:{free_port()}"
        cmd = [sys.executable, "-m", "onlinespec", "serve", *model_flags(args), "--host", "127.0.0.1"]
        cmd += ["--port", self.url.rsplit(":", 1)[1], "--learner", "ogd", "--round-size", "1"]
        cmd += ["--draft-state", str(state), *flags]
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env())
        deadline = time.monotonic() + args.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError(f"server did not come up in {args.startup_timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30)

    def draft(self) -> dict:
        return self.get("/draft").json()

    def health(self) -> dict:
        return self.get("/health").json()

    def complete(self, i: int) -> int:
        """One learned, greedy request; returns the HTTP status."""
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": self.args.max_tokens, "temperature": 0}
        return httpx.post(f"{self.url}/v1/completions", json=body, timeout=self.args.request_timeout).status_code

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def model_flags(args: argparse.Namespace) -> list[str]:
    return ["--target", args.target_spec, "--draft", args.draft, "--k", str(args.k)]


def child_env() -> dict[str, str]:
    """The benchmark's own environment (PYTHONPATH included), one thread per server: 2-core machines."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def wait_for(condition, timeout: float = 30.0, every: float = 0.05) -> bool:
    """Poll `condition()` until it is true or `timeout` seconds pass (bounded: never loops for ever)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())


def snapshot_digest(state: Path) -> tuple[int, str] | None:
    """(round, digest of draft.safetensors) of the snapshot a restart loads (the newest that verifies)."""
    with contextlib.redirect_stderr(io.StringIO()):  # its fallback lines belong to the server's log, not ours
        loaded = load_state(state)
    if loaded is None:
        return None
    tensors, _, info = loaded
    return int(info["round"]), tensors_digest(tensors)


def restart_and_check(args: argparse.Namespace, state: Path, log: Path) -> dict:
    """Start a server on `state`, read what it restored, check its live digest against the snapshot, SIGTERM it."""
    expected = snapshot_digest(state)
    server = Server(args, state, log)
    try:
        draft = server.draft()
    finally:
        server.stop(signal.SIGTERM)
    return {
        "restored": draft["round"],
        "digest_matches_snapshot": expected is not None and (draft["round"], draft["digest"]) == expected,
        "log": server.log(),
    }


def published_round(log: str) -> int:
    """The last round the server published, from its own log ('round N: tau ...', written at the boundary, before
    the answer of the request that ended the round is sent)."""
    rounds = [int(m.group(1)) for m in re.finditer(r"round (\d+): tau", log)]
    restored = re.search(r"restored draft state \(round (\d+)\)", log)
    return max(rounds, default=int(restored.group(1)) if restored else 0)


def fallback_lines(log: str) -> list[str]:
    """The lines a start-up logs when it skips a snapshot that fails its checksum (the last one names the one used)."""
    return [line.strip() for line in log.splitlines() if "corrupt or incomplete" in line or "skipping corrupt" in line]


def tracebacks(*logs: str) -> int:
    return sum(log.count("Traceback") for log in logs)


# --- scenarios ---------------------------------------------------------------------------------------------------
def sigkill(args: argparse.Namespace, work: Path) -> list[dict]:
    """Kill -9 right after a round boundary (its snapshot is being written in a thread), restart, check what was
    restored, go on serving with the restarted server, repeat; the last cycle kills in the middle of a request."""
    state, rows, sent = work / "state", [], 0
    server = Server(args, state, work / "server-0.log")
    for cycle in range(args.kills):
        mid_request = cycle == args.kills - 1 and args.kills > 1
        for _ in range(args.requests):
            assert server.complete(sent) == 200
            sent += 1
        if mid_request:
            body = {"prompt": PROMPTS[0], "max_tokens": 400, "temperature": 0, "stream": True}
            with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as r:
                for _ in zip(range(3), r.iter_lines(), strict=False):  # the request is decoding
                    pass
                server.proc.send_signal(signal.SIGKILL)
        else:  # at once: the boundary (and its snapshot thread) ran just before the answer was sent
            server.proc.send_signal(signal.SIGKILL)
        rc = server.proc.wait(timeout=30)
        published = published_round(server.log())
        interrupted = sorted(p.name for p in state.glob(".writing-*"))  # a snapshot write the kill cut short
        latest = (state / "LATEST").read_text().strip() if (state / "LATEST").is_file() else None
        expected = snapshot_digest(state)
        server = Server(args, state, work / f"server-{cycle + 1}.log")
        draft = server.draft()
        matches = expected is not None and (draft["round"], draft["digest"]) == expected
        when = "mid-request" if mid_request else "right after a round boundary"
        notes = f"kill {cycle + 1}/{args.kills}, {when}; LATEST at the kill: {latest}; "
        notes += f"interrupted write: {', '.join(interrupted) or 'none'}; restart digest == snapshot: {matches}"
        if fallback := fallback_lines(server.log()):
            notes += f"; {fallback[-1]}"
        rows.append(row(f"SIGKILL #{cycle + 1}", published, draft["round"], published - draft["round"], notes))
        rows[-1]["checks"] = {"digest_matches_snapshot": matches, "rc": rc, "interrupted_writes": interrupted}
    server.stop(signal.SIGTERM)
    rows[-1]["checks"]["tracebacks"] = tracebacks(*(p.read_text() for p in work.glob("server-*.log")))
    return rows


def serve_then_stop(args: argparse.Namespace, state: Path, log: Path) -> tuple[Server, int, int]:
    """A learning server on `state` that serves --requests requests and stops on SIGTERM: (it, the round it
    published, its exit status)."""
    server = Server(args, state, log)
    for i in range(args.requests):
        assert server.complete(i) == 200
    published = server.draft()["round"]
    return server, published, server.stop(signal.SIGTERM)


def corrupt(args: argparse.Namespace, work: Path) -> list[dict]:
    state = work / "state"
    server, published, rc = serve_then_stop(args, state, work / "server.log")
    newest = state / (state / "LATEST").read_text().strip()
    previous = sorted(p.name for p in state.glob("state-*") if p.is_dir() and p != newest)
    blob = bytearray((newest / "draft.safetensors").read_bytes())
    for offset in range(len(blob) - 64, len(blob) - 32):  # inside the tensor data, past the header
        blob[offset] ^= 0xFF
    (newest / "draft.safetensors").write_bytes(bytes(blob))
    after = restart_and_check(args, state, work / "restart.log")
    lines = fallback_lines(after["log"])
    notes = f"flipped 32 bytes of {newest.name}/draft.safetensors; log: '{lines[-1] if lines else 'NO FALLBACK LINE'}'"
    notes += f"; older snapshots {previous}; restart digest == snapshot: {after['digest_matches_snapshot']}"
    out = row("corrupt newest snapshot", published, after["restored"], published - after["restored"], notes)
    out["checks"] = {"first_stop_rc": rc, "fallback_logged": bool(lines), **after_checks(after)}
    return [out]


def second_owner(args: argparse.Namespace, work: Path) -> list[dict]:
    state = work / "state"
    first = Server(args, state, work / "server.log")
    refusals = {}
    try:
        for i in range(args.requests):
            assert first.complete(i) == 200
        round_before = first.draft()["round"]
        port = str(free_port())
        serve = [sys.executable, "-m", "onlinespec", "serve", *model_flags(args), "--port", port]
        serve += ["--learner", "ogd", "--draft-state", str(state)]
        generate = [sys.executable, "-m", "onlinespec", "generate", "the cat", *model_flags(args)]
        generate += ["--learner", "ogd", "--max-new-tokens", "4", "--no-chat", "--draft-state", str(state)]
        for name, cmd in (("serve", serve), ("generate", generate)):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=child_env())
            message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            refusals[name] = {"rc": proc.returncode, "message": message, "traceback": "Traceback" in proc.stderr}
        for i in range(args.requests):  # the owner is unaffected: it keeps serving and learning
            assert first.complete(args.requests + i) == 200
        published = first.draft()["round"]
    finally:
        rc = first.stop(signal.SIGTERM)
    after = restart_and_check(args, state, work / "restart.log")
    holder = f"is in use by pid {first.proc.pid} on"
    for r in refusals.values():
        r["names_the_owner"] = holder in r["message"]
    notes = "; ".join(f"second `{name}`: exit {r['rc']}" for name, r in refusals.items())
    named = all(r["names_the_owner"] for r in refusals.values())
    notes += f"; both say 'the draft state DIR is in use by pid N on HOST (...)', N the first server's: {named}"
    notes += f"; first server's round {round_before} -> {published} after the refusals"
    out = row("second owner (serve, generate)", published, after["restored"], published - after["restored"], notes)
    out["checks"] = {"refusals": refusals, "first_stop_rc": rc, "first_advanced": published > round_before}
    out["checks"].update(after_checks(after))
    return [out]


def unwritable(args: argparse.Namespace, work: Path) -> list[dict]:
    state = work / "state"
    server = Server(args, state, work / "server.log")
    blocked_requests = args.requests
    try:
        for i in range(args.requests):
            assert server.complete(i) == 200
        wait_for(lambda: server.health()["checkpoints"]["written"] >= server.health()["round"])  # all on disk
        round_at_block = server.draft()["round"]
        aside = state.with_name(state.name + "-aside")
        state.rename(aside)
        state.write_text("in the way\n")
        codes = [server.complete(args.requests + i) for i in range(blocked_requests)]
        published = server.draft()["round"]
        failures = published - round_at_block
        wait_for(lambda: server.health()["checkpoints"]["failed"] >= failures)
        health = server.health()["checkpoints"]
        metrics = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in server.get("/metrics").text.splitlines()
            if line.startswith(("onlinespec_checkpoints_total", "onlinespec_checkpoint_failures_total"))
        }
    finally:
        rc = server.stop(signal.SIGTERM)
    log = server.log()
    shutdown = [line.strip() for line in log.splitlines() if "could not save the draft state" in line]
    state.unlink()
    aside.rename(state)
    after = restart_and_check(args, state, work / "restart.log")
    counts = "/".join(f"{value:g}" for value in metrics.values())
    notes = (
        f"blocked after round {round_at_block}; the {len(codes)} requests after it answered {sorted(set(codes))}; "
        f"/health written {health['written']}, failed {health['failed']}, last_good_round "
        f"{health['last_good_round']}; /metrics checkpoints_total/checkpoint_failures_total {counts}; shutdown "
        f"(exit {rc}) logged {len(shutdown)} line: 'could not save the draft state ... {shutdown[-1].split('; ')[-1]}'"
        if shutdown
        else "NO SHUTDOWN LINE"
    )
    out = row("unwritable state dir", published, after["restored"], published - after["restored"], notes)
    out["checks"] = {
        "codes": codes,
        "health": health,
        "metrics": metrics,
        "stop_rc": rc,
        "shutdown_lines": shutdown,
        "tracebacks": tracebacks(log),
        **after_checks(after),
    }
    return [out]


def sigterm(args: argparse.Namespace, work: Path) -> list[dict]:
    state = work / "state"
    server, published, rc = serve_then_stop(args, state, work / "server.log")
    saved = [line.strip() for line in server.log().splitlines() if "saved draft state" in line]
    after = restart_and_check(args, state, work / "restart.log")
    notes = f"exit {rc}; log: '{saved[-1] if saved else 'NO SAVE LINE'}'"
    notes += f"; restart digest == snapshot: {after['digest_matches_snapshot']}"
    out = row("SIGTERM (graceful)", published, after["restored"], published - after["restored"], notes)
    out["checks"] = {"stop_rc": rc, "saved_line": bool(saved), **after_checks(after)}
    return [out]


def row(scenario: str, published: int, restored: int, lost: int, notes: str) -> dict:
    return {"scenario": scenario, "published": published, "restored": restored, "lost": lost, "notes": notes}


def after_checks(after: dict) -> dict:
    return {"digest_matches_snapshot": after["digest_matches_snapshot"], "restart_tracebacks": tracebacks(after["log"])}


RUNNERS = {"sigkill": sigkill, "corrupt": corrupt, "second-owner": second_owner, "unwritable": unwritable}
RUNNERS["sigterm"] = sigterm


def report_markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"# onlinespec serve fault run: {cfg['target']}, draft {cfg['draft']}, k {cfg['k']}, learner ogd, round "
        f"size 1, {cfg['requests']} learned requests of {cfg['max_tokens']} tokens before each fault",
        "",
        "| scenario | published round | restored round | rounds lost | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['scenario']} | {r['published']} | {r['restored']} | {r['lost']} | {r['notes']} |")
    lines += ["", f"Wall time: {report['wall_s']:.0f} s. Server logs: {cfg['out']}/<scenario>/."]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    chosen = args.scenarios.split(",")
    if unknown := set(chosen) - set(SCENARIOS):
        raise SystemExit(f"unknown scenarios {sorted(unknown)}: choose from {', '.join(SCENARIOS)}")
    if args.requests < 1 or args.kills < 1 or args.max_tokens < 1:
        raise SystemExit("--requests, --kills and --max-tokens must be >= 1")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    args.target_spec = args.target
    if args.target == "tiny":
        args.target_spec = str(out / "tiny-model")
        make_tiny_model(Path(args.target_spec))
    tic = time.perf_counter()
    rows = []
    for name in chosen:
        work = out / name
        work.mkdir()
        started = time.perf_counter()
        new = RUNNERS[name](args, work)
        for r in new:
            print(
                f"{r['scenario']}: published {r['published']}, restored {r['restored']}, lost {r['lost']}; {r['notes']}"
            )
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
        rows += new
    report = {
        "config": {**vars(args), "scenarios": chosen},
        "environment": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "wall_s": time.perf_counter() - tic,
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    markdown = report_markdown(report)
    (out / "report.md").write_text(markdown)
    print(markdown)
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
