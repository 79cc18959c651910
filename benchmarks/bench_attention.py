"""One attention call of a model's head shape, SDPA as transformers runs it against grouped query heads folded into
the query length (models/attention.py), over several cached lengths and query counts.

    python benchmarks/bench_attention.py                                  # SmolLM2-135M's shape, bf16
    python benchmarks/bench_attention.py --target qwen2.5-coder-1.5b --dtype float32

One query runs without a mask (an autoregressive step), several with their causal mask (a verify forward on a
cache), as transformers passes them; random inputs; fastest of 3 rounds of 20 calls, the two ways alternating.
Also prints how far each way's output is from a float64 reference. Writes attention.json to --out. Reads only the
model's config (an embedded model not yet converted is converted first, as every command does).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import AutoConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from onlinespec.models import DEFAULT_MODEL
from onlinespec.models.attention import FOLDED, SDPA, causal_mask, folded_gqa_attention, head_shape, measure_attention
from onlinespec.models.embedded import EMBEDDED, embedded_model_dir

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def max_errors(shape: tuple[int, int, int], dtype: torch.dtype, queries: int, length: int) -> dict[str, float]:
    """Largest absolute difference of each way's output from float64 SDPA on the same random inputs."""
    heads, kv_heads, head_dim = shape
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    g = torch.Generator().manual_seed(queries * 10_000 + length)
    q = torch.randn(1, heads, queries, head_dim, generator=g)
    k, v = (torch.randn(1, kv_heads, length, head_dim, generator=g) for _ in range(2))
    mask = None if queries == 1 else causal_mask(queries, length)
    reference = sdpa_attention_forward(module, q.double(), k.double(), v.double(), mask)[0]
    ways = {SDPA: sdpa_attention_forward, FOLDED: folded_gqa_attention}
    low = (q.to(dtype), k.to(dtype), v.to(dtype))
    return {
        way: (attend(module, *low, mask)[0].double() - reference).abs().max().item() for way, attend in ways.items()
    }


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=DEFAULT_MODEL, help="an embedded name or a model directory (its config)")
    p.add_argument("--dtype", default="bfloat16", choices=tuple(DTYPES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lengths", default="100,300,600,1000", help="cached positions, comma-separated")
    p.add_argument("--queries", default="1,3,5,25", help="new tokens per call, comma-separated")
    p.add_argument("--out", default="bench-out/attention")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = embedded_model_dir(args.target) if args.target in EMBEDDED else args.target
    shape = head_shape(AutoConfig.from_pretrained(source))
    lengths = tuple(int(x) for x in args.lengths.split(","))
    queries = tuple(int(x) for x in args.queries.split(","))
    us = measure_attention(shape, DTYPES[args.dtype], lengths, queries)
    cases = [(q, length) for q in queries for length in lengths]
    heads, kv_heads, head_dim = shape
    print(f"{args.target}: {heads} query heads over {kv_heads} KV heads of {head_dim}, {args.dtype}, ", end="")
    print(f"{args.threads} threads")
    print("queries  cached    sdpa us  folded us  speedup   max error sdpa / folded")
    rows = []
    for i, (n, length) in enumerate(cases):
        err = max_errors(shape, DTYPES[args.dtype], n, length)
        rows.append({"queries": n, "length": length, "sdpa_us": us[SDPA][i], "folded_us": us[FOLDED][i], "error": err})
        print(
            f"{n:>7} {length:>7} {us[SDPA][i]:>10.1f} {us[FOLDED][i]:>10.1f} {us[SDPA][i] / us[FOLDED][i]:>8.2f}x"
            f"   {err[SDPA]:.1e} / {err[FOLDED]:.1e}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {**vars(args), "shape": shape, "rows": rows, "torch": torch.__version__}
    (out / "attention.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'attention.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
