"""How often, and why, greedy speculative output differs from greedy autoregressive output in bf16.

    python benchmarks/bench_bf16_exactness.py                      # 4 prompts x 3 streams x 64 tokens
    python benchmarks/bench_bf16_exactness.py --prompts 1 --max-new-tokens 16

In fp32 the two are equal (tests/). In bf16 a k-token verify forward and a 1-token forward may round differently,
so at a near-tie the argmax can flip and the texts part. For each prompt this runs our autoregressive path and the
speculative path (default draft) in bf16, finds the first position where they differ, and reports the
autoregressive run's top-1 minus top-2 logit there (its margin, in logit units) next to the margins of all
positions (how rare such near-ties are). Then the same with a cheap remedy: the LM head in fp32 (the final
hidden state cast up, the head's weight kept in fp32), `--remedy fp32-head`. Writes results.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from onlinespec import GenerationConfig, Pipeline
from onlinespec.bench.prompts import source_stream
from onlinespec.drafts import make_draft
from onlinespec.models.resolve import load_model
from onlinespec.prompting import encode_prompt

TARGET = "smollm2-135m"


class Fp32Head(nn.Module):
    """An LM head computed in fp32: hidden [.., d] (any dtype) -> logits [.., V] in fp32."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().float(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.float() @ self.weight.T


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="humaneval,spider,writingbench")
    p.add_argument("--prompts", type=int, default=4, help="first N online prompts of each stream")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--draft", default="auto")
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--out", default="bench-out/bf16-exactness")
    return p.parse_args(argv)


@torch.inference_mode()
def margins(model: nn.Module, prompt: torch.Tensor, tokens: list[int]) -> list[float]:
    """Top-1 minus top-2 logit at each generated position, from one teacher-forced pass (fp32 arithmetic on the
    model's own logits) -> [len(tokens)]."""
    ids = torch.cat([prompt, torch.tensor(tokens, dtype=torch.long)])[None]
    logits = model(input_ids=ids).logits[0, prompt.shape[0] - 1 : -1].float()  # [n, V]
    top = logits.topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


def run_config(remedy: str, args: argparse.Namespace, prompts: list[tuple[str, int, list[dict]]]) -> dict:
    target = load_model(TARGET, "bfloat16")
    draft = make_draft(args.draft, target, "bfloat16")  # before the remedy: the draft keeps its bf16 head
    if remedy == "fp32-head":
        target.model.lm_head = Fp32Head(target.model.get_output_embeddings().weight)
    ar, spec = Pipeline(target, None), Pipeline(target, draft)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, k=args.k)
    rows = []
    for stream, i, chat in tqdm(prompts, desc=f"bf16 {remedy}"):
        ids = encode_prompt(target.tokenizer, chat)
        a = ar.start(ids, cfg, mode="ar").result().token_ids
        s = spec.start(ids, cfg, mode="spec").result().token_ids
        first = next((j for j, (x, y) in enumerate(zip(a, s, strict=False)) if x != y), None)
        if first is None and len(a) != len(s):
            first = min(len(a), len(s))
        m = margins(target.model, ids, a)
        rows.append(
            {
                "stream": stream,
                "prompt": i,
                "first_divergence": first,
                "margin_there": m[first] if first is not None and first < len(m) else None,
                "median_margin": float(torch.tensor(m).median()) if m else None,
                "positions_below_0.1": sum(x < 0.1 for x in m),
                "positions": len(m),
            }
        )
    differ = [r for r in rows if r["first_divergence"] is not None]
    return {
        "remedy": remedy,
        "prompts": len(rows),
        "mismatching": len(differ),
        "margins_at_divergence": [round(r["margin_there"], 4) for r in differ if r["margin_there"] is not None],
        "share_of_positions_below_0.1": sum(r["positions_below_0.1"] for r in rows) / sum(r["positions"] for r in rows),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prompts = [
        (name, i, p.chat())
        for name in args.streams.split(",")
        for i, p in enumerate(source_stream(name).online[: args.prompts])
    ]
    results = [run_config(remedy, args, prompts) for remedy in ("none", "fp32-head")]
    lines = [
        f"# bf16 greedy exactness: {len(prompts)} prompts x {args.max_new_tokens} tokens, draft {args.draft}, "
        f"k={args.k}",
        "",
        "| remedy | prompts whose speculative text differs | AR logit margin at the first divergence | "
        "share of positions with margin < 0.1 |",
        "|---|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['remedy']} | {r['mismatching']} / {r['prompts']} | {r['margins_at_divergence'] or '-'} | "
            f"{r['share_of_positions_below_0.1']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"config": vars(args), "results": results}, indent=1))
    (out / "report.md").write_text(text)
    print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
