"""One bf16 linear layer, plain `F.linear` against oneDNN's packed kernel (models/packed_linear.py), on this CPU.

    python benchmarks/bench_packed_linear.py                 # SmolLM2-135M's shapes, 2 threads
    python benchmarks/bench_packed_linear.py --threads 1

For each weight shape [out, in] and number of tokens M: microseconds per product, the fastest of --rounds
timings of --repeat calls on one weight (it stays in the CPU's caches), and whether the two outputs are
bit-identical. Then the same over enough distinct [1536, 576] weights to fill --stream-mb of memory, one token
each, as a model's forward streams its weights from memory. Writes packed_linear.json to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from onlinespec.models.packed_linear import PACKED_DTYPE

SHAPES = ((576, 576), (1536, 576), (576, 1536), (49152, 576))  # SmolLM2-135M: attention, MLP in/out, LM head
TOKENS = (1, 3, 8, 25, 300)


def packed_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def fastest_us(fn, repeat: int, rounds: int) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        tic = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - tic) / repeat)
    return best * 1e6


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--stream-mb", type=int, default=265, help="memory of the distinct weights streamed")
    p.add_argument("--out", default="bench-out/packed-linear")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise SystemExit("this CPU has no oneDNN bf16 support: the packed layout is not offered here")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for out_f, in_f in SHAPES:
        weight = torch.randn(out_f, in_f, generator=gen).to(PACKED_DTYPE)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        for m in TOKENS:
            x = torch.randn(1, m, in_f, generator=gen).to(PACKED_DTYPE)
            plain_us = fastest_us(lambda x=x, w=weight: F.linear(x, w), args.repeat, args.rounds)
            packed_us = fastest_us(lambda x=x, q=packed: packed_linear(x, q), args.repeat, args.rounds)
            same = torch.equal(F.linear(x, weight), packed_linear(x, packed))
            row = {"shape": [out_f, in_f], "tokens": m, "plain_us": plain_us, "packed_us": packed_us, "same": same}
            rows.append(row)
            print(f"[{out_f:>5}, {in_f:>4}] x {m:>3} tokens: plain {plain_us:8.1f} us  packed {packed_us:8.1f} us  "
                  f"({plain_us / packed_us:.2f}x)  bit-identical: {same}")  # fmt: skip
    count = max(1, args.stream_mb * 2**20 // (1536 * 576 * 2))
    weights = [torch.randn(1536, 576, generator=gen).to(PACKED_DTYPE) for _ in range(count)]
    packs = [torch.ops.mkldnn._reorder_linear_weight(w, 1) for w in weights]
    x = torch.randn(1, 1, 576, generator=gen).to(PACKED_DTYPE)
    stream = {
        "weights": count,
        "mb": count * 1536 * 576 * 2 / 2**20,
        "plain_ms": fastest_us(lambda: [F.linear(x, w) for w in weights], 1, args.rounds + 2) / 1e3,
        "packed_ms": fastest_us(lambda: [packed_linear(x, q) for q in packs], 1, args.rounds + 2) / 1e3,
    }
    print(f"{count} distinct [1536, 576] weights ({stream['mb']:.0f} MB), one token each: plain "
          f"{stream['plain_ms']:.1f} ms, packed {stream['packed_ms']:.1f} ms "
          f"({stream['plain_ms'] / stream['packed_ms']:.2f}x)")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {**vars(args), "torch": torch.__version__, "products": rows, "stream": stream}
    (out / "packed_linear.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'packed_linear.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
