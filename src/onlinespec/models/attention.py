"""Grouped-query attention with each KV head's query heads folded into the query length, where that is faster.

A grouped-query model (SmolLM2-135M: 9 query heads over 3 KV heads; Qwen2.5-Coder-1.5B: 12 over 2) attends with
`groups` query heads per KV head. transformers' SDPA path hands PyTorch the 9 heads as they are: with no mask (a
one-token step) it asks the kernel to broadcast the KV heads (`enable_gqa`); with a mask (every verify forward over
several tokens, every tree) it first copies each KV head `groups` times (`repeat_kv`). Folded, the same call sees
3 heads whose query rows are the 3 x q rows of their group, the keys and values read once per KV head, no copy.
Each output row is the same sum over the same keys, but the kernel may block a [groups * q, D] product differently
from a [q, D] one: on random inputs the outputs were bit-identical in bf16 (1-25 queries, 7-1000 positions, one case
7.5e-9 apart); inside SmolLM2-135M a 3-token verify forward's attention differed by up to one bf16 step (2e-3 to
8e-3) and its logits by up to 0.25. So, like any change of kernel in reduced precision, a greedy token can differ
from SDPA's at a near-tie (`tests/test_attention.py` checks the outputs agree to bf16 rounding).

Measured on the project's avx512_bf16 AMD EPYC (2 threads, torch 2.13; SmolLM2-135M's head shape; `python
benchmarks/bench_attention.py`): one bf16 query over 300 cached positions 143 us as SDPA, 30 us folded (600: 356
-> 77; 1000: 605 -> 115); three queries with their causal mask 112 -> 59 us at 300 (600: 215 -> 102). In a
one-token SmolLM2 bf16 step at 300 positions attention was 22 % of the time.

The rule (`faster_attention`): time one query without a mask and three with their causal mask, over SHORT and LONG
cached positions, both ways (fastest of ROUNDS, alternating), and fold if that saves at least MIN_GAIN of the
summed time; measured once per model config, dtype, thread count and CPU, cached on disk like the weight layout
(models/machine_cache.py). float32 models keep SDPA without measuring (the greedy-equality tests run in float32,
where folding is not bit-identical: about 1e-7 apart); so do models without grouped heads and models on another
attention implementation (eager, flash). `$ONLINESPEC_ATTENTION` = auto | sdpa | folded overrides `auto`.

What is folded (`folded_gqa_attention`): calls with one query and no mask, and calls with a boolean or additive
mask shared by the heads ([B, 1, q, T]); a causal call without a mask (a prefill into an empty cache, which SDPA
runs with its causal fast path) and anything with position bias or dropout go to SDPA as before. The switch uses
transformers' public attention registry: the model's `config._attn_implementation` names ATTENTION_NAME; modules
built from the same config (the EAGLE heads' decoder layer) follow it.

The mask is folded once per forward, not once per layer (`folded_mask`, registered as ATTENTION_NAME's mask
function): transformers builds a chain verify's causal mask once and hands the same [B, 1, q, T] boolean to every
layer, and repeating it to the folded rows and turning it into the additive form SDPA's CPU kernel works in cost
30 layers x (repeat + where), about 0.5 ms of a 5-token SmolLM2 verify forward. `folded_mask` returns the mask
already folded, [B, 1, groups * q, T] and additive in the model's dtype (0 where attended, -inf elsewhere: the
values PyTorch makes of a boolean mask itself, so the outputs are bit-identical), and the attention takes a mask
with groups * q rows as folded. A mask handed to the model whole (a tree's, [B, 1, q, T]) is folded per call as
before. Measured (SmolLM2-135M bf16, 2 threads, the avx512_bf16 EPYC, both ways interleaved in one process:
`python benchmarks/bench_step_profile.py --prefix 600 --rounds 5`): forwards over 3 / 5 / 8 tokens after 600
cached positions 18.0 / 18.9 / 20.9 ms folded once against 18.6 / 19.4 / 21.7 folded per layer (0.4-1.3 ms less
after 100 and 1000 positions too; docs/benchmarks.md).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from onlinespec.errors import UserError
from onlinespec.models.machine_cache import read_measurement, write_measurement

SDPA, FOLDED = "sdpa", "folded"
ATTENTION_MODES = ("auto", SDPA, FOLDED)  # auto: measure once (cached) and keep the faster
ATTENTION_NAME = "onlinespec_folded_gqa"  # registered with transformers' attention and mask registries
ENV = "ONLINESPEC_ATTENTION"
SHORT, LONG = 256, 1024  # cached positions the rule measures at
QUERIES = (1, 3)  # a one-token step (no mask) and a verify forward of the default k = 2 (with its causal mask)
ROUNDS = 3  # each way is timed this many times, alternating; the fastest counts
CALLS = 20  # attention calls per timing
MIN_GAIN = 0.05  # folding must save at least this share of the summed SDPA time


def folded_gqa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function. query [B, H, q, D], key/value [B, Hkv, T, D], attention_mask None or
    [B, 1, q, T] -> ([B, q, H, D], None). Folds query [B, H, q, D] into [B, Hkv, groups * q, D] (row g * q + i is
    query head h * groups + g at position i) and the mask's rows alike; otherwise SDPA as transformers runs it."""
    batch, heads, queries, dim = query.shape
    groups = heads // key.shape[1]
    shared_mask = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] == 1
    prefolded = shared_mask and groups > 1 and attention_mask.shape[2] == groups * queries  # from `folded_mask`
    if (
        groups == 1
        or not query.is_cpu  # measured on the CPU only (a model moved to a GPU after loading keeps SDPA's kernel)
        or query.dtype == torch.float32
        or dropout > 0.0
        or kwargs.get("position_bias") is not None
        or (attention_mask is None and queries > 1)  # causal without a mask: SDPA's causal path
        or (attention_mask is not None and not shared_mask)
    ):
        if prefolded:
            attention_mask = attention_mask[:, :, :queries]  # group 0's rows: the mask as transformers made it
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    folded = query.reshape(batch, key.shape[1], groups * queries, dim)
    mask = attention_mask  # None, or folded already by `folded_mask`: [B, 1, groups * q, T]
    if attention_mask is not None and not prefolded:
        mask = attention_mask.repeat(1, 1, groups, 1)  # a mask handed in whole (a tree's): fold its rows here
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(query.dtype)  # an additive mask in the query's dtype, as SDPA requires
    out = F.scaled_dot_product_attention(folded, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, queries, dim).transpose(1, 2).contiguous(), None


def folded_mask(*args, config=None, dtype: torch.dtype | None = None, **kwargs) -> torch.Tensor | None:
    """transformers' SDPA mask (`sdpa_mask`, same arguments), folded for `folded_gqa_attention` once per forward:
    a [B, 1, q, T] boolean becomes [B, 1, groups * q, T] additive in `dtype` (row g * q + i = row i; 0 where
    attended, -inf elsewhere). Left as SDPA's where the attention would not fold it: no mask (one query, or a
    prefill's causal fast path), no grouped heads, float32, off the CPU."""
    mask = sdpa_mask(*args, config=config, dtype=dtype, **kwargs)
    if mask is None or config is None or dtype in (None, torch.float32) or not mask.is_cpu:
        return mask
    heads, kv_heads, _ = head_shape(config)
    groups = heads // kv_heads
    if groups == 1 or mask.dim() != 4 or mask.shape[1] != 1 or mask.dtype != torch.bool:
        return mask
    allowed = mask.repeat(1, 1, groups, 1)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(allowed.logical_not(), float("-inf"))


AttentionInterface.register(ATTENTION_NAME, folded_gqa_attention)
AttentionMaskInterface.register(ATTENTION_NAME, folded_mask)


def attention_kind(model: nn.Module) -> str:
    """How `model` attends: FOLDED (ours), SDPA, or the name of another implementation."""
    name = getattr(model.config, "_attn_implementation", None) or SDPA
    return FOLDED if name == ATTENTION_NAME else name


def set_attention(model: nn.Module, mode: str) -> None:
    """Switch `model` (an SDPA or already-folded transformers model) to `mode`, in place; a model on another
    attention implementation (eager, flash) is left as it is."""
    if mode not in (SDPA, FOLDED):
        raise UserError(f"unknown attention '{mode}': choose one of {', '.join(ATTENTION_MODES)}")
    if attention_kind(model) in (SDPA, FOLDED):
        model.set_attn_implementation(ATTENTION_NAME if mode == FOLDED else SDPA)


def head_shape(config) -> tuple[int, int, int]:
    """(query heads, KV heads, head dim) of a transformers model config's attention."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return heads, kv_heads, head_dim


def causal_mask(queries: int, length: int) -> torch.Tensor:
    """[1, 1, q, T] bool: new token i (at position T - q + i) sees positions <= its own."""
    return torch.ones(queries, length, dtype=torch.bool).tril(length - queries)[None, None]


@torch.inference_mode()
def measure_attention(
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    lengths: tuple[int, ...] = (SHORT, LONG),
    queries: tuple[int, ...] = QUERIES,
) -> dict[str, list[float]]:
    """Microseconds of one attention call for each (q in `queries`, cached length in `lengths`), in that order,
    each way: {SDPA: [...], FOLDED: [...]} (random inputs of `shape` = (heads, KV heads, head dim) in `dtype`; one
    query without a mask, several with their causal mask, as transformers passes them; fastest of ROUNDS,
    alternating)."""
    heads, kv_heads, head_dim = shape
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    ways = {SDPA: sdpa_attention_forward, FOLDED: folded_gqa_attention}
    cases = [(q, length) for q in queries for length in lengths]
    best: dict[str, list[float]] = {way: [float("inf")] * len(cases) for way in ways}
    for i, (n, length) in enumerate(cases):
        query = torch.randn(1, heads, n, head_dim, dtype=dtype)
        key, value = (torch.randn(1, kv_heads, length, head_dim, dtype=dtype) for _ in range(2))
        mask = None if n == 1 else causal_mask(n, length)
        for _ in range(ROUNDS):
            for way, attend in ways.items():
                attend(module, query, key, value, mask)  # warm
                tic = time.perf_counter()
                for _ in range(CALLS):
                    attend(module, query, key, value, mask)
                best[way][i] = min(best[way][i], (time.perf_counter() - tic) / CALLS * 1e6)
    return best


def faster_attention(times_us: dict[str, list[float]]) -> str:
    """The rule: FOLDED when its summed time is at least MIN_GAIN below SDPA's, else SDPA."""
    return FOLDED if sum(times_us[FOLDED]) < (1 - MIN_GAIN) * sum(times_us[SDPA]) else SDPA


def folding_unavailable(model: nn.Module) -> str | None:
    """Why folding would change nothing for `model` (None where it can help): float32 (never folded), no grouped
    heads, or another attention implementation."""
    heads, kv_heads, _ = head_shape(model.config)
    dtype = next(model.parameters()).dtype
    if dtype == torch.float32:
        return "folded attention is for bfloat16 and float16 models (the model is float32: --dtype bfloat16)"
    if heads == kv_heads:
        return f"the model has as many KV heads as query heads ({heads}): there is nothing to fold"
    if attention_kind(model) not in (SDPA, FOLDED):
        return f"the model runs '{attention_kind(model)}' attention, not SDPA"
    return None


def use_attention(model: nn.Module, mode: str = "auto", cache_dir: Path | None = None) -> str:
    """Set how `model` attends by `mode`: SDPA, FOLDED (refused with the reason where it would change nothing), or
    "auto" (`$ONLINESPEC_ATTENTION` when set, else FOLDED where this machine runs it MIN_GAIN faster, measured once
    and cached under `cache_dir`; SDPA with nothing measured where folding is unavailable or off the CPU).
    Returns what the model now runs."""
    from_env = mode == "auto" and bool(os.environ.get(ENV))
    if from_env:
        mode = os.environ[ENV]  # the environment decides what "auto" means; an explicit mode stays
    if mode not in ATTENTION_MODES:
        raise UserError(f"unknown attention '{mode}' (${ENV} or the caller): choose one of auto, sdpa, folded")
    if mode == FOLDED and (reason := folding_unavailable(model)):
        if not from_env:  # asked for by name: say why not; asked for by the environment: as auto would
            raise UserError(f"attention 'folded' is not available here: {reason}; use --attention auto")
        mode = SDPA
    if mode == "auto":
        param = next(model.parameters())
        shape = head_shape(model.config)
        if folding_unavailable(model) or param.device.type != "cpu":
            mode = SDPA
        else:
            saved = read_measurement(cache_dir, "attention", model) if cache_dir is not None else None
            if saved is None:
                times = measure_attention(shape, param.dtype)
                saved = {"choice": faster_attention(times), "us": times, "queries": QUERIES, "lengths": [SHORT, LONG]}
                if cache_dir is not None:
                    write_measurement(cache_dir, "attention", model, saved)
            mode = saved["choice"]
    set_attention(model, mode)
    return attention_kind(model)
