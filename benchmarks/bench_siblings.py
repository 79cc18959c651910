"""Sibling linear layers as one packed product (models/sibling_linears.py) against one packed product each: whole
target forwards over 1 / 3 / 5 / 8 new tokens after a cached prefix, the two ways interleaved in one process.

    python benchmarks/bench_siblings.py                        # the embedded model, bf16, prefix 100 and 600
    python benchmarks/bench_siblings.py --target qwen2.5-coder-1.5b --prefixes 300

Each forward computes the logits of all its tokens, as a verify forward does. Prints the median and the fastest of
--rounds timings per size and way, the ratio of the medians, and whether the logits are bit-identical; writes
siblings.json to --out. Needs bf16 weights packed for oneDNN (a CPU with oneDNN bf16 support).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from onlinespec.decoding.kv_cache import new_cache, rollback
from onlinespec.models import DEFAULT_MODEL
from onlinespec.models.packed_linear import PackedLinear, pack_linears, packing_unavailable
from onlinespec.models.resolve import load_model
from onlinespec.models.sibling_linears import fingerprint

SIZES = (1, 3, 5, 8)
WAYS = ("siblings grouped", "one by one")


def ungroup_siblings(model: torch.nn.Module) -> None:
    """Run every grouped sibling of a packed `model` through a pack of its own weight, as before sibling groups
    existed (`pack_linears(model)` groups them again). For before/after comparisons (bench_vs_hf.py `@siblings=off`)."""
    for module in model.modules():
        if isinstance(module, PackedLinear) and module.group is not None:
            module.group = None
            module.packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), 1)
            module.packed_for = fingerprint(module.weight)


def switch(members: dict[PackedLinear, tuple], grouped: bool) -> None:
    """Set every sibling to run through its group (`grouped`) or through a pack of its own, both made once."""
    for module, (group, own_pack) in members.items():
        module.group = group if grouped else None
        module.packed, module.packed_for = (None, ()) if grouped else (own_pack, fingerprint(module.weight))


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=DEFAULT_MODEL)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefixes", default="100,600", help="cached positions before the timed forwards")
    p.add_argument("--rounds", type=int, default=30, help="timings per size and way, interleaved")
    p.add_argument("--out", default="bench-out/siblings")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.target, "bfloat16", "standard", "auto").model
    if reason := packing_unavailable(model):
        raise SystemExit(f"sibling groups are part of the packed layout, which is not available here: {reason}")
    pack_linears(model)
    members = {
        m: (m.group, torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), 1))
        for m in model.modules()
        if isinstance(m, PackedLinear) and m.group is not None
    }
    prefixes = [int(n) for n in args.prefixes.split(",")]
    ids = torch.randint(0, int(model.config.vocab_size), (1, max(prefixes) + max(SIZES)))
    results = []
    for prefix in prefixes:
        cache = new_cache(model)
        model(input_ids=ids[:, :prefix], past_key_values=cache, use_cache=True, logits_to_keep=1)
        times: dict[tuple[str, int], list[float]] = {}
        logits = {}
        for _ in range(args.rounds):
            for way in WAYS:
                switch(members, grouped=way == WAYS[0])
                for n in SIZES:
                    tic = time.perf_counter()
                    out = model(input_ids=ids[:, prefix : prefix + n], past_key_values=cache, use_cache=True)
                    times.setdefault((way, n), []).append((time.perf_counter() - tic) * 1e3)
                    rollback(cache, prefix)
                    logits[way, n] = out.logits
        for n in SIZES:
            row = {"prefix": prefix, "tokens": n, "bit_identical": torch.equal(logits[WAYS[0], n], logits[WAYS[1], n])}
            for way in WAYS:
                row[way] = {"median_ms": statistics.median(times[way, n]), "fastest_ms": min(times[way, n])}
            row["ratio_of_medians"] = row[WAYS[0]]["median_ms"] / row[WAYS[1]]["median_ms"]
            results.append(row)
            print(
                f"prefix {prefix:>5}, {n} tokens: grouped {row[WAYS[0]]['median_ms']:.2f} ms "
                f"(fastest {row[WAYS[0]]['fastest_ms']:.2f}), one by one {row[WAYS[1]]['median_ms']:.2f} ms "
                f"(fastest {row[WAYS[1]]['fastest_ms']:.2f}): {row['ratio_of_medians']:.3f}x, "
                f"bit-identical: {row['bit_identical']}"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {**vars(args), "torch": torch.__version__, "rows": results}
    (out / "siblings.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'siblings.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
