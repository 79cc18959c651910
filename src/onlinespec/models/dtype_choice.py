"""`--dtype auto` (the default): run the target in the dtype this machine runs it faster in, measured once.

Machines differ more than any default can guess. Measured with SmolLM2-135M (docs/benchmarks.md): on an AMD EPYC
with avx512_bf16 a bfloat16 forward over 1 / 3 / 8 new tokens took 25 / 33 / 28 ms against float32's 38 / 81 / 81
ms; on an Intel Xeon with AMX bf16 was the slower one (81 against 65 ms for one token, every method 1.7-2x faster
in float32); on a Xeon without bf16 instructions a 200-token bf16 prefill took 70 s against 13 s.

The rule (`faster_dtype`): bfloat16 only when the CPU has bf16 instructions (`has_bf16_instructions`: x86's
avx512_bf16 or amx_bf16, Arm's bf16; without them bf16 matmuls are emulated and nothing is measured) AND forwards
over MEASURED_SIZES new tokens (an autoregressive step, a verify at k = 2, a verify at k = 7) take at least
MIN_GAIN less time in sum in bf16 than in float32; otherwise float32, the exact dtype. Measured once per model,
thread count and CPU, cached like the verify cost (models/machine_cache.py).

What bfloat16 costs: in float32 greedy speculative output equals greedy autoregressive output (tests/); in bf16 a
multi-token verify forward and a one-token forward round differently, so at a near-tie (a top-2 logit margin of
one or two bf16 steps) the two can pick different tokens and the texts part from there. Both are the target's
greedy output under some rounding; neither is more right. `onlinespec bench` reports how often and the margin at
each divergence; `--dtype float32` gives byte-equal outputs. `$ONLINESPEC_AUTO_DTYPE` (float32 or bfloat16) makes
`auto` resolve to that dtype without measuring: the test suite pins it to float32 so that its equality checks run
in float32 on every machine.
"""

from __future__ import annotations

import copy
import os
import platform
import sys
from pathlib import Path

import torch

from onlinespec.errors import UserError
from onlinespec.models.machine_cache import cpuinfo_fields, read_measurement, write_measurement

AUTO = "auto"
FLOAT32, BFLOAT16 = "float32", "bfloat16"
AUTO_DTYPE_ENV = "ONLINESPEC_AUTO_DTYPE"
MEASURED_SIZES = (1, 3, 8)  # new tokens per forward: an autoregressive step, a verify at k = 2, at k = 7
ROUNDS = 2  # each dtype is timed this many times, alternating; the fastest counts
MIN_GAIN = 0.10  # bf16 must save at least this share of float32's time: a near-tie keeps the exact dtype
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # /proc/cpuinfo flags of native bf16 arithmetic (x86, Arm)


def has_bf16_instructions(cpuinfo: str | None = None) -> bool:
    """Whether the CPU does bf16 arithmetic natively: one of BF16_FLAGS among the `flags` (x86) or `Features`
    (Arm) of /proc/cpuinfo (`cpuinfo`: its text, read from the file when None; False where it cannot be read)."""
    fields = cpuinfo_fields(cpuinfo)
    listed = (fields.get("flags") or fields.get("Features") or "").split()
    return any(flag in listed for flag in BF16_FLAGS)


def measure_dtypes(model: torch.nn.Module, rounds: int = ROUNDS, progress: bool = False) -> dict[str, list[float]]:
    """Milliseconds of forwards over each of MEASURED_SIZES new tokens, `model` (float32) against a bf16 copy
    of it, alternating for `rounds` rounds, the fastest of each kept: {"float32": [ms...], "bfloat16": [ms...]}.
    `model` itself is not changed; the copy costs half its memory while measuring."""
    from tqdm import tqdm

    from onlinespec.decoding.verify_cost import measure_verify_cost

    models = {FLOAT32: model, BFLOAT16: copy.deepcopy(model).to(torch.bfloat16)}
    best: dict[str, list[float]] = {}
    runs = [name for _ in range(rounds) for name in models]
    desc = "measuring whether bfloat16 runs faster here (once; cached)"
    for name in tqdm(runs, desc=desc, unit="dtype", file=sys.stderr, disable=not progress, leave=False):
        cost = measure_verify_cost(models[name], sizes=max(MEASURED_SIZES))
        ms = [cost.relative[n - 1] * cost.one_token_ms for n in MEASURED_SIZES]
        best[name] = [min(a, b) for a, b in zip(best.get(name, ms), ms, strict=True)]
    return best


def faster_dtype(times_ms: dict[str, list[float]]) -> str:
    """The rule: bfloat16 when its forwards over MEASURED_SIZES tokens take at least MIN_GAIN less time in total
    than float32's, else float32."""
    return BFLOAT16 if sum(times_ms[BFLOAT16]) <= (1 - MIN_GAIN) * sum(times_ms[FLOAT32]) else FLOAT32


def auto_dtype(model: torch.nn.Module, cache_dir: Path | None) -> tuple[str, dict]:
    """What `auto` means for `model` (loaded in float32) on this machine: (dtype name, how it was decided). The
    measurement is read from `cache_dir` when made before, else made now and saved there (None: not cached)."""
    pinned = os.environ.get(AUTO_DTYPE_ENV, "").strip()
    if pinned:
        if pinned not in (FLOAT32, BFLOAT16):
            raise UserError(f"${AUTO_DTYPE_ENV} is '{pinned}': set it to {FLOAT32} or {BFLOAT16}, or unset it")
        return pinned, {"reason": f"${AUTO_DTYPE_ENV}"}
    if not has_bf16_instructions():
        return FLOAT32, {"reason": f"no bf16 instructions on this CPU ({platform.machine()})"}
    saved = read_measurement(cache_dir, "dtype", model) if cache_dir is not None else None
    if saved is None:
        times = measure_dtypes(model, progress=True)
        saved = {"dtype": faster_dtype(times), "ms": times, "sizes": list(MEASURED_SIZES)}
        if cache_dir is not None:
            write_measurement(cache_dir, "dtype", model, saved)
    return saved["dtype"], {"reason": "measured", "ms": saved["ms"], "sizes": saved.get("sizes")}
