"""What a target forward over 1..9 new tokens costs on this machine, relative to one token: the curve that
`--verify-cost auto` cuts proposals by (decoding/verify_cost.py).

    python benchmarks/bench_verify_cost.py                                   # the embedded model, float32
    python benchmarks/bench_verify_cost.py --target qwen2.5-coder-1.5b --fresh
    python benchmarks/bench_verify_cost.py --dtype auto --fresh --prefix 600      # after a long prompt
    python benchmarks/bench_verify_cost.py --compare-dtypes                      # what --dtype auto would pick

By default it prints the curve the library would use (cached under the model cache directory, measured now if not
yet); `--fresh` measures again without touching the cache. The curve is measured in the weight layout the library
would use (models/weight_layout.py; `--weight-layout`); `--compare-layouts` also times forwards over 1..9 tokens
in both layouts, interleaved, and prints their milliseconds side by side. Writes verify_cost.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from onlinespec.decoding.verify_cost import MEASURED_TOKENS, PREFIX_TOKENS, cached_verify_cost, measure_verify_cost
from onlinespec.models import DEFAULT_MODEL, cache_root
from onlinespec.models.attention import ATTENTION_MODES, attention_kind
from onlinespec.models.dtype_choice import MEASURED_SIZES, faster_dtype, has_bf16_instructions, measure_dtypes
from onlinespec.models.machine_cache import cpu_name
from onlinespec.models.resolve import load_model
from onlinespec.models.weight_layout import (
    WEIGHT_LAYOUT_MODES,
    available_layouts,
    measure_weight_layouts,
    set_weight_layout,
    use_weight_layout,
)


@torch.inference_mode()
def compare_layouts(
    target: torch.nn.Module, keep: str, prefill: int, rounds: int = 3
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Milliseconds of forwards over 1..MEASURED_TOKENS tokens per layout, and of a prefill of `prefill` random
    tokens, layouts alternating, fastest of `rounds` kept; the model is left in `keep`."""
    best = measure_weight_layouts(target, sizes=MEASURED_TOKENS, rounds=rounds)
    prefill_ms: dict[str, float] = {}
    ids = torch.randint(0, int(target.config.vocab_size), (1, prefill), generator=torch.Generator().manual_seed(0))
    for _ in range(rounds if prefill else 0):
        for name in available_layouts(target):
            set_weight_layout(target, name)
            tic = time.perf_counter()
            target(input_ids=ids, logits_to_keep=1)
            prefill_ms[name] = min(prefill_ms.get(name, float("inf")), (time.perf_counter() - tic) * 1e3)
    set_weight_layout(target, keep)
    return best, prefill_ms


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=DEFAULT_MODEL)
    p.add_argument("--dtype", default="float32", choices=("auto", "float32", "bfloat16"))
    p.add_argument(
        "--prefix",
        type=int,
        default=0,
        help="measure forwards after a cache of this many positions (with --fresh; default: the library's, "
        f"{PREFIX_TOKENS}; long prompts: e.g. 600)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--fresh", action="store_true", help="measure again (the cache is neither read nor written)")
    p.add_argument("--weight-layout", default="auto", choices=WEIGHT_LAYOUT_MODES)
    p.add_argument("--compare-layouts", action="store_true", help="time both weight layouts over 1..9 tokens")
    p.add_argument("--prefill", type=int, default=400, help="--compare-layouts: also time a prefill this long")
    p.add_argument(
        "--compare-dtypes",
        action="store_true",
        help="also time forwards over 1 / 3 / 8 tokens in float32 and bfloat16 as `--dtype auto` does, and print "
        "what it would choose (measured now, the cache untouched)",
    )
    p.add_argument(
        "--attention",
        default="auto",
        choices=ATTENTION_MODES,
        help="the attention kernel (models/attention.py), as the library would choose (default: %(default)s)",
    )
    p.add_argument("--out", default="bench-out/verify-cost")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    record: dict = {}
    if args.compare_dtypes:
        times = measure_dtypes(load_model(args.target, "float32", "standard").model, progress=True)
        for name, ms in times.items():
            print(f"{name:>9}: " + ", ".join(f"{n} tokens {t:.0f} ms" for n, t in zip(MEASURED_SIZES, ms, strict=True)))
        bf16 = "has" if has_bf16_instructions() else "lacks"
        print(f"--dtype auto would choose {faster_dtype(times)} (this CPU {bf16} bf16 instructions)")
        record["dtypes_ms"] = times
    loaded = load_model(args.target, args.dtype, attention=args.attention)
    target, args.dtype = loaded.model, loaded.dtype  # what `auto` chose
    if args.prefix and not args.fresh:
        p.error("--prefix measures a curve the library does not cache: add --fresh")
    layout = use_weight_layout(target, args.weight_layout, cache_root())
    if args.compare_layouts:
        times, prefill_ms = compare_layouts(target, layout, args.prefill)
        print("tokens  " + "  ".join(f"{name:>12}" for name in times) + "   (ms, fastest of 3 rounds)")
        for n in range(MEASURED_TOKENS):
            print(f"{n + 1:>6}  " + "  ".join(f"{times[name][n]:>12.1f}" for name in times))
        if prefill_ms:
            print(f"prefill {args.prefill}: " + "  ".join(f"{name} {ms:.0f} ms" for name, ms in prefill_ms.items()))
        record["layouts_ms"], record["prefill_ms"] = times, prefill_ms
    prefix = args.prefix or PREFIX_TOKENS
    cost = measure_verify_cost(target, prefix=prefix) if args.fresh else cached_verify_cost(target, cache_root())
    where = f"{torch.get_num_threads()} threads, {cpu_name()}, prefix {prefix}"
    print(f"{args.target} {args.dtype}, weights {layout}, {attention_kind(target)} attention, {where}")
    print(f"one-token forward: {cost.one_token_ms:.0f} ms (0 = read from a cache written before this was recorded)")
    print("tokens  relative cost")
    for n, c in enumerate(cost.relative, start=1):
        print(f"{n:>6}  {c:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record.update(
        cost.to_dict(),
        **vars(args),
        layout_used=layout,
        attention_used=attention_kind(target),
        threads_used=torch.get_num_threads(),
    )
    record["loadavg"] = os.getloadavg()
    (out / "verify_cost.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'verify_cost.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
