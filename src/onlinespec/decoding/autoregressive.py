"""Plain autoregressive decoding in the same runtime: the baseline every speedup is measured against."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.kv_cache import new_cache
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.sampling import probs_from_logits, sample
from onlinespec.decoding.stopping import StopCriteria


def choose_token(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """logits [V] -> 0-dim LongTensor: argmax when greedy, else a draw from the processed distribution."""
    if cfg.sampling.greedy:
        return logits.argmax(dim=-1)
    return sample(probs_from_logits(logits[None], cfg.sampling), generator)[0]


@torch.inference_mode()
def autoregressive_stream(
    model: torch.nn.Module, prompt_ids: torch.Tensor, cfg: GenerationConfig, stop: StopCriteria, stats: RequestStats
) -> Iterator[list[int]]:
    """One target forward per new token. prompt_ids: LongTensor [T]. Yields the new token ids of each step."""
    resumed = time.perf_counter()  # time spent by the caller between yields is not ours
    generator = cfg.generator()
    cache = new_cache(model)
    stats.prompt_tokens = prompt_ids.shape[0]
    step_input = prompt_ids
    while not stop.finished:
        logits = model(input_ids=step_input[None], past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        token = choose_token(logits[0, -1], cfg, generator)
        stats.target_forwards += 1
        emitted = stop.extend([int(token)])
        stats.new_tokens += len(emitted)
        stats.wall_s += time.perf_counter() - resumed
        stats.target_s = stats.wall_s
        yield emitted
        resumed = time.perf_counter()
        step_input = token[None]
