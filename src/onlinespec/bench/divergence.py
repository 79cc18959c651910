"""Where a method's greedy output left the reference's, how close the target's choice was there.

Greedy speculative output is the target's argmax at every position, but the verify forward reads k + 1 positions
at once, and a forward over several tokens may round differently from a one-token forward (another matmul kernel
or blocking). Where the target's top two logits nearly tie, the two forwards can pick different tokens, and the
texts part there. The margin (top-1 minus top-2 logit of the target, one forward over the prompt and the
reference's tokens before the divergence) tells such a near-tie (a margin of a few rounding steps: about 1e-5 in
float32, 0.1 in bfloat16) from a bug (a clear margin).
"""

from __future__ import annotations

import torch

from onlinespec.bench.results import first_divergence


@torch.inference_mode()
def logit_margin(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Top-1 minus top-2 logit of `model`'s next-token prediction after `ids` [T]."""
    logits = model(input_ids=ids[None], logits_to_keep=1).logits[0, -1].float()
    top = logits.topk(2).values
    return float(top[0] - top[1])


def divergence_margins(
    model: torch.nn.Module, prompts: list[torch.Tensor], outputs: dict[str, list[list[int]]], reference: str
) -> dict[str, dict[str, float]]:
    """{method: {prompt index (str): margin at the first divergence}} for every output that differs from the
    reference's; `prompts[i]` holds prompt i's token ids [T_i]."""
    margins: dict[str, dict[str, float]] = {}
    for method, texts in outputs.items():
        for index, (ours, ref) in enumerate(zip(texts, outputs[reference], strict=False)):
            at = first_divergence(ours, ref)
            if at is None or at >= len(ref):
                continue  # equal, or the reference ended first: no choice of the target to read
            ids = torch.cat([prompts[index], torch.tensor(ref[:at], dtype=prompts[index].dtype)])
            margins.setdefault(method, {})[str(index)] = logit_margin(model, ids)
    return margins
