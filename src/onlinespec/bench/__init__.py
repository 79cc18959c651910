"""The online-learning benchmark (`onlinespec bench`): prompt streams (`prompts`), the interleaved runner
(`runner`), per-round checkpoints (`checkpoint`), results and report (`results`) and plots (`plots`); its CLI
command is onlinespec/commands/bench.py. Submodules are imported on use, so reading prompts does not load torch.

    from onlinespec.bench import run_bench
    from onlinespec.bench.prompts import load_stream
    from onlinespec.bench.runner import BenchSettings

    stream = load_stream("shifted:humaneval,spider", num_prompts=8)
    settings = BenchSettings(methods=("ar", "static", "ogd"), stream=stream.name, max_new_tokens=32, round_size=4, k=1)
    results = run_bench(settings, stream, "bench-out")   # results.json's content; files in bench-out/
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onlinespec.bench.prompts import Stream
    from onlinespec.bench.runner import BenchRunner, BenchSettings


def run_bench(settings: BenchSettings, stream: Stream, out: str | Path, **options: Any) -> dict:
    """Run (or, with `resume=True`, continue) a benchmark and write its outputs into `out`; returns results.json's
    content. `options` are BenchRunner's: resume, on_round (called with each round's records), show_progress."""
    from onlinespec.bench.runner import BenchRunner

    runner = BenchRunner(settings, stream, out, **options)
    try:
        return _finish(runner, settings, stream, out, runner.run())
    finally:
        runner.checkpoint.release()


def _finish(runner: BenchRunner, settings: BenchSettings, stream: Stream, out: str | Path, progress: dict) -> dict:
    from onlinespec.bench.results import environment, summarise, write_outputs
    from onlinespec.drafts import resolve_draft_spec

    config = {
        "settings": settings.to_dict(),
        "draft_used": resolve_draft_spec(settings.draft, settings.target),  # what `auto` stood for
        # c(1..9 tokens) relative to one token, measured on this machine (decoding/verify_cost.py); None = off
        "verify_cost": progress.get("verify_cost"),
        "dtype_used": progress.get("dtype"),  # what the target ran in (what `--dtype auto` chose)
        "weight_layout": progress.get("weight_layout"),  # what the target's weights used (models/weight_layout.py)
        "attention": progress.get("attention"),  # how the target attended (models/attention.py)
        "stream": stream.name,
        "prompts": len(stream.online),
        "warmup_prompts": len(stream.warmup),  # the stream's offline warm-up slice; not decoded here
        "prompts_sha256": runner.key["prompts_sha256"],
        "environment": environment(),
        "wall_s": progress["elapsed_s"],  # the decoding loop over all sessions (model loading not included)
        "sessions": progress["sessions"],  # 1 = ran without interruption
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    results = summarise(config, progress["rounds"], progress["outputs"], settings.k, progress.get("divergence_margins"))
    write_outputs(out, results, progress["rounds"])
    runner.checkpoint.drop_states()
    return results


__all__ = ["run_bench"]
