"""What a target forward over 1..9 new tokens costs on this machine, relative to one token: the curve that
`--verify-cost auto` cuts proposals by (decoding/verify_cost.py).

    python benchmarks/bench_verify_cost.py                                   # the embedded model, float32
    python benchmarks/bench_verify_cost.py --target qwen2.5-coder-1.5b --fresh

By default it prints the curve the library would use (cached under the model cache directory, measured now if not
yet); `--fresh` measures again without touching the cache. Writes verify_cost.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from onlinespec.decoding.verify_cost import cached_verify_cost, measure_verify_cost
from onlinespec.models import DEFAULT_MODEL, cache_root
from onlinespec.models.resolve import load_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=DEFAULT_MODEL)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--fresh", action="store_true", help="measure again (the cache is neither read nor written)")
    p.add_argument("--out", default="bench-out/verify-cost")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    target = load_model(args.target, args.dtype).model
    cost = measure_verify_cost(target) if args.fresh else cached_verify_cost(target, cache_root())
    print(f"{args.target} {args.dtype}, {torch.get_num_threads()} threads, {platform.processor() or ''}")
    print(f"one-token forward: {cost.one_token_ms:.0f} ms (0 = read from a cache written before this was recorded)")
    print("tokens  relative cost")
    for n, c in enumerate(cost.relative, start=1):
        print(f"{n:>6}  {c:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {**cost.to_dict(), **vars(args), "threads_used": torch.get_num_threads(), "loadavg": os.getloadavg()}
    (out / "verify_cost.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'verify_cost.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
