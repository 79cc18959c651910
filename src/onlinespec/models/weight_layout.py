"""How the target's linear weights lie in memory, chosen by measuring which layout this machine runs faster.

`nn.Linear` keeps its weight as an [out, in] matrix and computes x @ W^T. With the same values stored
transposed (an [in, out] block in memory, seen through a [out, in] view with strides (1, out)), `F.linear` hands
the BLAS a contiguous right-hand matrix and picks another kernel. Which is faster depends on the CPU and on how
many tokens a forward carries: on the project's AMD EPYC (avx2, one thread) SmolLM2-135M's forwards over 1/2/3
tokens took 0.93/1.29/1.52 of the standard layout's one-token step transposed against 1/1.71/1.96 standard, while
4 tokens and more were slower transposed (docs/benchmarks.md). The values are the same, so outputs agree up to
fp32 rounding, and a model's parameters keep their names and shapes (state dicts, exports and the drafts that read
the LM head's rows see no difference).

The rule (`faster_layout`): measure forwards over 1..MEASURED_TOKENS new tokens in each layout (the one-token
step of autoregressive decoding and the verify forwards of the default k = 2) and keep the transposed layout only
if its summed time is at least MIN_GAIN lower; otherwise the layout as loaded. The margin is there because the
timings are noisy: on an Intel Xeon with AMX (2 cores, bf16) one measurement found transposed 3.0 % faster
(sums 232 against 240 ms), another, of 3 rounds, found it 15 % slower, and in one interleaved run our
autoregressive decoding ran 1.13x faster in the standard layout than in the transposed one the first had chosen
(docs/benchmarks.md). Measured
once per model, dtype, thread count and CPU, cached on disk like the verify cost.

A third layout, "packed" (models/packed_linear.py), keeps a oneDNN-blocked copy of each bf16 weight next to it and
runs the packed kernel: bit-identical outputs, and on the avx512_bf16 EPYC a one-token step 1.2x faster for
SmolLM2-135M and 2.4x for Qwen2.5-Coder-1.5B (docs/benchmarks.md). It is a
candidate wherever the model is bf16 and oneDNN supports bf16 on the CPU (`packing_unavailable`), and `auto`
measures it with the others: the fastest layout is kept if it saves MIN_GAIN over the standard one.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from onlinespec.errors import UserError
from onlinespec.models.machine_cache import read_measurement, write_measurement
from onlinespec.models.packed_linear import is_packed, pack_linears, packing_unavailable, unpack_linears

STANDARD, TRANSPOSED, PACKED = "standard", "transposed", "packed"
WEIGHT_LAYOUTS = (STANDARD, TRANSPOSED, PACKED)
WEIGHT_LAYOUT_MODES = ("auto", *WEIGHT_LAYOUTS)  # auto: measure once (cached) and keep the faster layout
MEASURED_TOKENS = 3  # 1 = an autoregressive step; 3 = a verify step of the default k = 2
ROUNDS = 3  # each layout is timed this many times, alternating, the fastest counts
MIN_GAIN = 0.05  # another layout must save at least this share of the standard layout's time


def available_layouts(model: nn.Module) -> tuple[str, ...]:
    """The layouts `model` can take here: packed only for bf16 weights on a CPU with oneDNN bf16."""
    return WEIGHT_LAYOUTS if packing_unavailable(model) is None else (STANDARD, TRANSPOSED)


def weight_layout(model: nn.Module) -> str:
    """The layout of `model`'s linear weights (the first one's: `set_weight_layout` sets them all alike)."""
    if is_packed(model):
        return PACKED
    for module in model.modules():
        if isinstance(module, nn.Linear):
            w = module.weight
            return TRANSPOSED if w.dim() == 2 and w.shape[0] > 1 and w.stride() == (1, w.shape[0]) else STANDARD
    return STANDARD


def set_weight_layout(model: nn.Module, layout: str, copy: bool = False) -> None:
    """Store every `nn.Linear` weight of `model` in `layout`, in place; a weight tied to an embedding (the LM head
    of a model with tied embeddings) stays tied. Values, names, shapes and requires_grad are unchanged; a model
    already in `layout` is left as it is, unless `copy` (then every weight is copied into fresh memory).
    Packed: the standard layout plus a packed copy of every weight (models/packed_linear.py)."""
    if layout not in WEIGHT_LAYOUTS:
        raise UserError(f"unknown weight layout '{layout}': choose one of {', '.join(WEIGHT_LAYOUT_MODES)}")
    if layout == PACKED and (reason := packing_unavailable(model)):
        raise UserError(f"weight layout 'packed' is not available here: {reason}; use --weight-layout auto")
    if weight_layout(model) == layout and not copy:
        return
    unpack_linears(model)
    if layout == PACKED:
        set_weight_layout(model, STANDARD, copy=copy)
        pack_linears(model)
        return
    if weight_layout(model) == layout and not copy:
        return
    replaced: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            old = module.weight
            if id(old) not in replaced:
                data = old.detach().t() if layout == TRANSPOSED else old.detach()  # the block to make contiguous
                data = data.clone(memory_format=torch.contiguous_format)  # always fresh memory
                data = data.t() if layout == TRANSPOSED else data
                replaced[id(old)] = nn.Parameter(data, requires_grad=old.requires_grad)
            module.weight = replaced[id(old)]
    for module in model.modules():  # re-tie embeddings that shared a replaced weight
        if isinstance(module, nn.Embedding) and id(module.weight) in replaced:
            module.weight = replaced[id(module.weight)]


def measure_weight_layouts(
    model: nn.Module, progress: bool = False, sizes: int = MEASURED_TOKENS, rounds: int = ROUNDS
) -> dict[str, list[float]]:
    """Milliseconds of forwards over 1..sizes new tokens in each layout (fastest of `rounds`, layouts alternating);
    leaves `model` in the layout it had. `progress`: a progress bar on stderr."""
    from tqdm import tqdm

    from onlinespec.decoding.verify_cost import measure_verify_cost

    start = weight_layout(model)
    best: dict[str, list[float]] = {}
    runs = [layout for _ in range(rounds) for layout in available_layouts(model)]
    desc = "measuring which weight layout runs faster here (once; cached)"
    for layout in tqdm(runs, desc=desc, unit="layout", file=sys.stderr, disable=not progress, leave=False):
        set_weight_layout(model, layout)
        cost = measure_verify_cost(model, sizes=sizes)
        ms = [c * cost.one_token_ms for c in cost.relative]
        best[layout] = [min(a, b) for a, b in zip(best.get(layout, ms), ms, strict=True)]
    set_weight_layout(model, start)
    return best


def faster_layout(times_ms: dict[str, list[float]]) -> str:
    """The rule: the layout whose forwards over 1..MEASURED_TOKENS tokens take the least time in total, if that is
    at least MIN_GAIN less than the standard layout's, else standard (a near-tie keeps the layout as loaded)."""
    fastest = min(times_ms, key=lambda layout: sum(times_ms[layout]))
    return fastest if sum(times_ms[fastest]) < (1 - MIN_GAIN) * sum(times_ms[STANDARD]) else STANDARD


def use_weight_layout(model: nn.Module, mode: str, cache_dir=None) -> str:
    """Put `model` in the layout `mode` names ("standard", "transposed", "packed", or "auto": the fastest one on
    this machine, measured once and cached under `cache_dir`); returns the layout used."""
    if mode not in WEIGHT_LAYOUT_MODES:
        raise UserError(f"unknown weight layout '{mode}': choose one of {', '.join(WEIGHT_LAYOUT_MODES)}")
    if mode == "auto":
        set_weight_layout(model, STANDARD)  # the measurement's key describes the model as loaded
        # the candidates are part of the key: a measurement made before a layout existed is made again
        key = {"layouts": list(available_layouts(model))}
        if PACKED in key["layouts"]:  # and one made before packed siblings shared one product (2026-12-05)
            key["packed"] = "siblings grouped"
        saved = read_measurement(cache_dir, "weight-layout", model, key) if cache_dir is not None else None
        if saved is None:
            times = measure_weight_layouts(model, progress=True)
            saved = {"layout": faster_layout(times), "ms": times}
            if cache_dir is not None:
                write_measurement(cache_dir, "weight-layout", model, saved, key)
        mode = saved["layout"]
        # Always fresh memory, measured now or read from the cache: weights loaded from a file may sit at unaligned
        # addresses, where the BLAS may round differently than on a copy, so a run that measured and one that read
        # the cache would otherwise differ in the last bits (and, at a near-tie, in a greedy token).
        set_weight_layout(model, mode, copy=True)
        return mode
    set_weight_layout(model, mode)
    return mode
