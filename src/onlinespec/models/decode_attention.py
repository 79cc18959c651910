"""The attention of a one-token step in reduced precision, run in float32 where this machine does that faster.

Measured on the project's avx512_bf16 AMD EPYC (2 threads, torch 2.13; `benchmarks/bench_decode_attention.py`):
PyTorch's CPU attention kernel over ONE bfloat16 query (SmolLM2-135M's shape: 9 query heads over 3 KV heads of 64)
took 131 us with 300 cached positions and 474 us with 1000, while THREE queries took 58 / 172 us and the same one
query on float32 copies (inputs cast up, output cast back) 32 / 128 us. That one-query call is what every
autoregressive step and every draft model step makes, in each layer: at 300 cached positions it was 22 % of a
SmolLM2-135M bf16 step, and a step ran 1.16x faster (1.48x at 1000) with the float32 call; Qwen2.5-Coder-1.5B
1.14x / 1.47x.

The rule (`faster_decode_attention`): time the one-query attention of the model's head shape over SHORT and LONG
cached lengths both ways (fastest of ROUNDS, the two alternating) and run it in float32 only if that saves at least
MIN_GAIN of the summed time; measured once per model config, dtype, thread count and CPU, cached on disk like the
weight layout (models/machine_cache.py). `$ONLINESPEC_DECODE_ATTENTION` = auto | sdpa | float32 overrides.

What changes: only calls with one query in a dtype other than float32 (`one_query_in_float32`); prefill, verify
and tree forwards (several queries) and float32 models run SDPA exactly as before. The float32 result is rounded
to the model's dtype once: closer to a float64 reference than bf16 SDPA's (measured: 5.6e-4 vs 7.3e-4 max error at
300 positions), but not bit-identical to it, so in bfloat16 an autoregressive token may differ from SDPA's at a
near-tie, as reduced-precision outputs already may between a k-token and a 1-token forward (docs/method.md).
The switch uses transformers' public attention registry: the model's `config._attn_implementation` names
ATTENTION_NAME, whose mask is SDPA's; modules built from the same config (the EAGLE heads' decoder layer) follow it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from onlinespec.errors import UserError
from onlinespec.models.machine_cache import read_measurement, write_measurement

SDPA, FLOAT32 = "sdpa", "float32"
DECODE_ATTENTION_MODES = ("auto", SDPA, FLOAT32)  # auto: measure once (cached) and keep the faster
ATTENTION_NAME = "onlinespec_one_query_float32"  # registered with transformers' attention and mask registries
ENV = "ONLINESPEC_DECODE_ATTENTION"
SHORT, LONG = 256, 1024  # cached positions the rule measures at
ROUNDS = 3  # each way is timed this many times, alternating; the fastest counts
CALLS = 20  # attention calls per timing
MIN_GAIN = 0.05  # float32 must save at least this share of the summed SDPA time


def one_query_in_float32(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A transformers attention function. query [B, H, q, D], key/value [B, Hkv, T, D] -> ([B, q, H, D], None).
    One query in a reduced dtype: SDPA on float32 copies, the output cast back; anything else: SDPA as is."""
    if query.shape[2] != 1 or query.dtype == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask.float()  # an additive mask must match the query's dtype
    out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return out.to(query.dtype), weights


AttentionInterface.register(ATTENTION_NAME, one_query_in_float32)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def decode_attention(model: nn.Module) -> str:
    """How `model`'s one-query attention runs: FLOAT32 (ours), SDPA, or the name of another implementation."""
    name = getattr(model.config, "_attn_implementation", None) or SDPA
    return FLOAT32 if name == ATTENTION_NAME else name


def set_decode_attention(model: nn.Module, mode: str) -> None:
    """Switch `model` (an SDPA or already-switched transformers model) to `mode`, in place; a model on another
    attention implementation (eager, flash) is left as it is."""
    if mode not in (SDPA, FLOAT32):
        raise UserError(f"unknown decode attention '{mode}': choose one of {', '.join(DECODE_ATTENTION_MODES)}")
    if decode_attention(model) not in (SDPA, FLOAT32):
        return
    model.set_attn_implementation(ATTENTION_NAME if mode == FLOAT32 else SDPA)


def _head_shape(model: nn.Module) -> tuple[int, int, int]:
    """(query heads, KV heads, head dim) of `model`'s attention, from its config."""
    c = model.config
    heads = int(c.num_attention_heads)
    kv_heads = int(getattr(c, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // heads)
    return heads, kv_heads, head_dim


@torch.inference_mode()
def measure_decode_attention(model: nn.Module, lengths: tuple[int, ...] = (SHORT, LONG)) -> dict[str, list[float]]:
    """Microseconds of one attention call with one query over each cached length, each way: {SDPA: [...],
    FLOAT32: [...]} (random inputs of the model's head shape and dtype; fastest of ROUNDS, the ways alternating)."""
    heads, kv_heads, head_dim = _head_shape(model)
    dtype = next(model.parameters()).dtype
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    ways = {SDPA: sdpa_attention_forward, FLOAT32: one_query_in_float32}
    best: dict[str, list[float]] = {way: [float("inf")] * len(lengths) for way in ways}
    for i, length in enumerate(lengths):
        query = torch.randn(1, heads, 1, head_dim, dtype=dtype)
        key, value = (torch.randn(1, kv_heads, length, head_dim, dtype=dtype) for _ in range(2))
        for _ in range(ROUNDS):
            for way, attend in ways.items():
                attend(module, query, key, value, None)  # warm
                tic = time.perf_counter()
                for _ in range(CALLS):
                    attend(module, query, key, value, None)
                best[way][i] = min(best[way][i], (time.perf_counter() - tic) / CALLS * 1e6)
    return best


def faster_decode_attention(times_us: dict[str, list[float]]) -> str:
    """The rule: FLOAT32 when its summed time is at least MIN_GAIN below SDPA's, else SDPA."""
    return FLOAT32 if sum(times_us[FLOAT32]) < (1 - MIN_GAIN) * sum(times_us[SDPA]) else SDPA


def use_decode_attention(model: nn.Module, mode: str = "auto", cache_dir: Path | None = None) -> str:
    """Set `model`'s one-query attention by `mode` (`$ONLINESPEC_DECODE_ATTENTION` wins when set): SDPA, FLOAT32,
    or "auto" (FLOAT32 where this machine runs it MIN_GAIN faster, measured once and cached under `cache_dir`;
    SDPA for float32 models and off the CPU, where there is nothing to choose). Returns what the model now runs."""
    mode = os.environ.get(ENV) or mode
    if mode not in DECODE_ATTENTION_MODES:
        raise UserError(f"unknown decode attention '{mode}' (${ENV} or the caller): choose one of auto, sdpa, float32")
    param = next(model.parameters())
    if mode == "auto":
        if param.dtype == torch.float32 or param.device.type != "cpu" or decode_attention(model) not in (SDPA, FLOAT32):
            mode = SDPA
        else:
            saved = read_measurement(cache_dir, "decode-attention", model) if cache_dir is not None else None
            if saved is None:
                times = measure_decode_attention(model)
                saved = {"choice": faster_decode_attention(times), "us": times, "lengths": [SHORT, LONG]}
                if cache_dir is not None:
                    write_measurement(cache_dir, "decode-attention", model, saved)
            mode = saved["choice"]
    set_decode_attention(model, mode)
    return decode_attention(model)
