"""Where the time of one autoregressive step goes: the target's one-token forward, profiled by operator, and the
same step with each attention implementation: SDPA, eager, and SDPA with grouped query heads folded
(models/attention.py), whose mask is folded once per forward or, as before 2026-12-05, in every layer (issue 12:
"our autoregressive path >= 1.3x HF generate()", "a verify over k + 1 <= 5 positions <= 1.1 plain steps").

    python benchmarks/bench_step_profile.py                       # the embedded model, --dtype auto, prefix 300
    python benchmarks/bench_step_profile.py --dtype float32 --prefix 600

Our autoregressive step is one HF forward with `logits_to_keep=1` plus an argmax (decoding/autoregressive.py), so
what this finds is what any path through the same model pays. Prints the operators' share of the self CPU time
over `--steps` steps (attention as `--attention` sets it), and the fastest of 10 forwards over 1 / 3 / 5 / 8
new tokens (all their logits, as a verify forward computes them) with each attention implementation, interleaved
over `--rounds` rounds, and each forward's cost in one-token steps of the same implementation. Writes profile.json
to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from onlinespec.decoding.kv_cache import new_cache, rollback
from onlinespec.models import DEFAULT_MODEL
from onlinespec.models.attention import ATTENTION_MODES, ATTENTION_NAME, attention_kind, folded_mask
from onlinespec.models.resolve import DTYPE_CHOICES, load_model
from onlinespec.models.weight_layout import WEIGHT_LAYOUT_MODES, weight_layout

# what we call it: (transformers' name, the mask function registered for ours)
ATTENTION = {
    "sdpa": ("sdpa", folded_mask),
    "eager": ("eager", folded_mask),
    "folded": (ATTENTION_NAME, folded_mask),
    "folded, mask per layer": (ATTENTION_NAME, sdpa_mask),  # the attention repeats SDPA's boolean mask each layer
}
SIZES = (1, 3, 5, 8)


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default=DEFAULT_MODEL)
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prefix", type=int, default=300, help="cached positions before the measured step")
    p.add_argument("--steps", type=int, default=20, help="one-token steps profiled")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved timings")
    p.add_argument("--weight-layout", default="auto", choices=WEIGHT_LAYOUT_MODES)
    p.add_argument("--attention", default="auto", choices=ATTENTION_MODES)
    p.add_argument("--out", default="bench-out/step-profile")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model(args.target, args.dtype, args.weight_layout, args.attention)
    model = loaded.model
    ids = torch.randint(0, int(model.config.vocab_size), (1, args.prefix + max(SIZES)))
    cache = new_cache(model)
    model(input_ids=ids[:, : args.prefix], past_key_values=cache, use_cache=True, logits_to_keep=1)

    token = ids[:, args.prefix : args.prefix + 1]
    model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)  # warm-up
    rollback(cache, args.prefix)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
            rollback(cache, args.prefix)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    top = [
        {"op": e.key, "share": round(e.self_cpu_time_total / total, 4), "calls_per_step": e.count / args.steps}
        for e in events[:12]
    ]
    layout = weight_layout(model)
    attention = attention_kind(model)
    print(f"{args.target} {loaded.dtype}, {layout} weights, {attention} attention, prefix {args.prefix}, ", end="")
    print(f"{args.threads} threads: one step")
    for row in top:
        print(f"  {row['share']:6.1%}  {row['op']}  ({row['calls_per_step']:.0f} calls per step)")

    best: dict[str, dict[int, float]] = {name: {} for name in ATTENTION}
    for _ in range(args.rounds):
        for name, (implementation, mask_function) in ATTENTION.items():
            model.set_attn_implementation(implementation)
            AttentionMaskInterface.register(ATTENTION_NAME, mask_function)
            for n in SIZES:
                for _ in range(10):
                    tic = time.perf_counter()
                    model(input_ids=ids[:, args.prefix : args.prefix + n], past_key_values=cache, use_cache=True)
                    ms = (time.perf_counter() - tic) * 1e3
                    rollback(cache, args.prefix)
                    best[name][n] = min(best[name].get(n, float("inf")), ms)
    AttentionMaskInterface.register(ATTENTION_NAME, folded_mask)
    model.set_attn_implementation(ATTENTION.get(attention, (attention,))[0])
    for name in ATTENTION:
        times = ", ".join(f"{n} tokens {best[name][n]:.1f} ms ({best[name][n] / best[name][1]:.3f})" for n in SIZES)
        print(f"{name:>22} attention: {times}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **vars(args),
        "dtype_used": loaded.dtype,
        "layout_used": layout,
        "attention_used": attention,
        "top_ops": top,
        "attention_ms": best,
        "steps_per_forward": {name: {n: best[name][n] / best[name][1] for n in SIZES} for name in ATTENTION},
    }
    (out / "profile.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'profile.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
