"""The lookahead-reasoning benchmark: a stream of math word problems, five methods interleaved per problem.

Methods (REASON_METHODS): `target` (the target alone, greedy: the reference for speed and answers), `draft` (the
draft alone), `lr-frozen` (lookahead reasoning with the draft as loaded), `lr-sft` and `lr-dpo` (lookahead reasoning
whose draft learns online from the round's preference pairs: online SFT, online DPO). Every problem runs every
method in turn, in one process, so the ratios come from the same run.

Learning is prequential: problem i is solved with the draft as updated after problems < i. The pairs of a round of
`round_problems` problems are buffered and the draft takes one optimiser step after the round's last problem; the
step's time is added to that problem's time (tokens/s include drafting, the target, the judge and the update).

Files in OUT: config.json (the settings; a resume must match them), problems.jsonl (one line per problem: every
method's record), state/METHOD/ (the learners' weights and optimiser state after each update), results.json (the
summary), report.md, step_acceptance.png. A killed run resumes from the last update: problems after it are solved
again (same settings, same greedy output).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from onlinespec.atomic import write_text_atomic
from onlinespec.errors import UserError
from onlinespec.online.state_store import load_state, save_state
from onlinespec.reasoning.judges import JUDGES, make_judge
from onlinespec.reasoning.problems import Problem, answer_value, math_word_problems
from onlinespec.reasoning.solve import Solution, solve_alone, solve_lookahead
from onlinespec.reasoning.step_learner import StepLearnerConfig, StepPreferenceLearner

REASON_METHODS = ("target", "draft", "lr-frozen", "lr-sft", "lr-dpo")
LEARNING = {"lr-sft": "sft", "lr-dpo": "dpo"}
# name -> (settings that differ from the defaults, what it is); flags given explicitly override them
REASON_PRESETS = {
    "quick": (
        {"problems": 2, "max_new_tokens": 64, "max_step_tokens": 40, "depth": 3, "round_problems": 1},
        "2 problems, answers up to 64 tokens, steps up to 40, depth 3, learning after every problem",
    ),
    "learn": (
        {
            "problems": 12,
            "max_new_tokens": 64,
            "max_step_tokens": 40,
            "depth": 3,
            "round_problems": 1,
            "methods": ("lr-frozen", "lr-sft", "lr-dpo"),
            "lr": 5e-5,
            "steps_per_update": 2,
        },
        "12 problems, the three lookahead methods only (the learning curve), lr 5e-5 with 2 Adam steps per "
        "round; otherwise as quick",
    ),
    "full": (
        {"problems": 20, "max_new_tokens": 192, "round_problems": 2},
        "20 problems, answers up to 192 tokens, the paper's steps (100 tokens) and depth (4), learning every 2",
    ),
}


@dataclass(frozen=True)
class ReasonBenchSettings:
    target: str = "qwen2.5-coder-1.5b"
    draft: str = "smollm2-135m"
    dtype: str = "float32"
    methods: tuple[str, ...] = REASON_METHODS
    problems: int = 12
    judge: str = "overlap"
    min_overlap: float = 0.5
    depth: int = 4  # drafted steps per round (the paper's lookahead depth)
    max_new_tokens: int = 256  # per answer, in target tokens
    max_step_tokens: int = 100
    round_problems: int = 2  # problems per learning round (the paper: 25; a CPU stream is short)
    lr: float = 1e-5
    beta: float = 0.1
    lora_rank: int = 0
    steps_per_update: int = 1  # Adam steps per learning round
    weight_layout: str = "auto"  # both models' (models/weight_layout.py; auto: each measured once, cached)
    attention: str = "auto"  # the target's and the draft's (models/attention.py)

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in REASON_METHODS]
        if unknown or not self.methods:
            raise UserError(f"unknown method(s) {unknown}: choose from {', '.join(REASON_METHODS)}")
        if self.judge not in JUDGES:
            raise UserError(f"unknown judge '{self.judge}': choose one of {', '.join(JUDGES)}")
        for name in ("problems", "depth", "max_new_tokens", "max_step_tokens", "round_problems"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        self.learner_config("dpo").check()

    def learner_config(self, method: str) -> StepLearnerConfig:
        return StepLearnerConfig(
            method, self.lr, self.beta, 1.0, self.lora_rank, steps_per_update=self.steps_per_update
        )


def settings_from_json(data: dict) -> ReasonBenchSettings:
    known = {f.name for f in fields(ReasonBenchSettings)}
    values = {k: (tuple(v) if k == "methods" else v) for k, v in data.items() if k in known}
    return ReasonBenchSettings(**values)


def record(solution: Solution, update: dict | None = None) -> dict:
    seconds = dict(solution.seconds)
    seconds["update"] = update["seconds"] if update else 0.0
    seconds["total"] = seconds["total"] + seconds["update"]
    return {
        "tokens": solution.tokens,
        "seconds": seconds,
        "finished": solution.finished,
        "rounds": solution.rounds,
        "drafted": solution.drafted,
        "accepted": solution.accepted,
        "pairs": len(solution.pairs),
        "answer": answer_value(solution.text),
        "text": solution.text,
        "update": update,
    }


class ReasonBench:
    """Models, judge and learners of one run; `solve(method, problem)` runs one method on one problem."""

    def __init__(self, settings: ReasonBenchSettings, target, draft) -> None:
        """`target` and `draft`: (model, tokenizer) pairs, loaded by the caller."""
        self.settings, self.target, self.draft = settings, target, draft
        self.judge = make_judge(settings.judge, target[0], target[1], settings.min_overlap)
        self.learners: dict[str, StepPreferenceLearner] = {}
        for method, kind in LEARNING.items():
            if method in settings.methods:
                config = settings.learner_config(kind)
                self.learners[method] = StepPreferenceLearner(copy.deepcopy(draft[0]), draft[1], config)

    def draft_of(self, method: str) -> tuple[object, object]:
        learner = self.learners.get(method)
        return (learner.model, self.draft[1]) if learner else self.draft

    def solve(self, method: str, problem: Problem) -> Solution:
        s = self.settings
        if method == "target":
            return solve_alone(*self.target, problem.messages(), s.max_new_tokens)
        if method == "draft":
            return solve_alone(*self.draft, problem.messages(), s.max_new_tokens)
        return solve_lookahead(
            problem.messages(),
            self.draft_of(method),
            self.target,
            self.judge,
            s.depth,
            s.max_new_tokens,
            s.max_step_tokens,
        )


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: it and what follows are solved again
    return rows


def _append_row(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _start(out: Path, settings: ReasonBenchSettings, bench: ReasonBench) -> list[dict]:
    """Check or write config.json, restore the learners, and return the rows already done (those up to the
    learners' last saved update; later rows are dropped and solved again)."""
    config = out / "config.json"
    if config.is_file():
        saved = settings_from_json(json.loads(config.read_text()))
        if saved != settings:
            raise UserError(f"{out} holds a run with other settings ({config}); use another --out or the same flags")
    else:
        write_text_atomic(config, json.dumps(asdict(settings), indent=2))
    rows = _read_rows(out / "problems.jsonl")
    done = len(rows)
    for method, learner in bench.learners.items():
        state = load_state(out / "state" / method)
        saved = 0
        if state is not None:
            tensors, learner_state, info = state
            learner.load(tensors, learner_state)
            saved = int(info["problems_done"])
        done = min(done, saved)
    rows = rows[:done]
    write_text_atomic(out / "problems.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def run_reason_bench(settings: ReasonBenchSettings, out: Path, target, draft, progress: bool = True) -> dict:
    """Run (or resume) the benchmark into `out`; returns the summary (also in results.json)."""
    settings.check()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    bench = ReasonBench(settings, target, draft)
    problems = math_word_problems()[: settings.problems]
    rows = _start(out, settings, bench)
    for i in tqdm(
        range(len(rows), len(problems)), desc="problems", initial=len(rows), total=len(problems), disable=not progress
    ):
        problem = problems[i]
        solutions = {m: bench.solve(m, problem) for m in settings.methods}
        end_of_round = (i + 1) % settings.round_problems == 0 or i + 1 == len(problems)
        updates: dict[str, dict] = {}
        for method, learner in bench.learners.items():
            for context_ids, pair in solutions[method].pairs:
                learner.add(context_ids, pair)
            if end_of_round:
                updates[method] = learner.update()
        row = {
            "index": i,
            "source": problem.source,
            "gold": problem.gold,
            "methods": {m: record(s, updates.get(m)) for m, s in solutions.items()},
        }
        _append_row(out / "problems.jsonl", row)
        rows.append(row)
        if end_of_round:
            for method, learner in bench.learners.items():
                tensors, learner_state, info = learner.state()
                save_state(
                    out / "state" / method,
                    tensors,
                    learner_state,
                    {**info, "problems_done": i + 1, "round": learner.updates},
                )
    summary = summarize(settings, rows)
    write_text_atomic(out / "results.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "report.md", report(summary))
    summary["plot"] = plot_step_acceptance(rows, settings.methods, out / "step_acceptance.png")
    return summary


def _third(rows: list[dict]) -> list[dict]:
    return rows[len(rows) - max(1, len(rows) // 3) :]


def _acceptance(rows: list[dict], method: str) -> float | None:
    rounds = sum(r["methods"][method]["rounds"] for r in rows)
    return sum(r["methods"][method]["accepted"] for r in rows) / rounds if rounds else None


def summarize(settings: ReasonBenchSettings, rows: list[dict]) -> dict:
    """Per method: tokens/s (every second on the clock), speedup over the target alone, step acceptance (accepted
    drafted steps per round) overall and over the last third of the stream, and answers: the share equal to the
    target-alone answer and to the dataset's."""
    methods: dict[str, dict] = {}
    for m in settings.methods:
        tokens = sum(r["methods"][m]["tokens"] for r in rows)
        seconds = sum(r["methods"][m]["seconds"]["total"] for r in rows)
        parts = {
            k: sum(r["methods"][m]["seconds"].get(k, 0.0) for r in rows) for k in ("draft", "target", "judge", "update")
        }
        same = (
            [r["methods"][m]["answer"] == r["methods"]["target"]["answer"] for r in rows]
            if "target" in settings.methods
            else []
        )
        gold = [r["methods"][m]["answer"] == r["gold"] for r in rows if r["gold"] is not None]
        methods[m] = {
            "tokens": tokens,
            "seconds": seconds,
            "seconds_by_part": parts,
            "tokens_per_s": tokens / seconds if seconds else None,
            "step_acceptance": _acceptance(rows, m),
            "step_acceptance_last_third": _acceptance(_third(rows), m),
            "drafted_steps": sum(r["methods"][m]["drafted"] for r in rows),
            "pairs": sum(r["methods"][m]["pairs"] for r in rows),
            "answers_equal_to_target": sum(same) / len(same) if same else None,
            "answers_equal_to_gold": sum(gold) / len(gold) if gold else None,
        }
    reference = methods.get("target", {}).get("tokens_per_s")
    frozen_last = methods.get("lr-frozen", {}).get("step_acceptance_last_third")
    for v in methods.values():
        v["speedup_vs_target"] = v["tokens_per_s"] / reference if reference and v["tokens_per_s"] else None
        last = v["step_acceptance_last_third"]
        v["last_third_vs_frozen"] = last / frozen_last if frozen_last and last is not None else None
    return {
        "settings": asdict(settings),
        "problems": len(rows),
        "torch_threads": torch.get_num_threads(),
        "methods": methods,
        "lossless": False,
        "note": "lookahead reasoning keeps steps a judge accepts: answers are not token-identical to the target's",
    }


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def report(summary: dict) -> str:
    lines = [
        f"# Lookahead reasoning: {summary['problems']} problems (not token-lossless: see answers)",
        "",
        "| method | tokens/s | vs target | step acceptance | last third | last third vs frozen | "
        "answers = target | answers = gold | draft s | target s | judge s | update s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m, v in summary["methods"].items():
        p = v["seconds_by_part"]
        lines.append(
            f"| {m} | {_fmt(v['tokens_per_s'], '.2f')} | {_fmt(v['speedup_vs_target'])} | "
            f"{_fmt(v['step_acceptance'])} | {_fmt(v['step_acceptance_last_third'])} | "
            f"{_fmt(v['last_third_vs_frozen'])} | {_fmt(v['answers_equal_to_target'], '.0%')} | "
            f"{_fmt(v['answers_equal_to_gold'], '.0%')} | {p['draft']:.1f} | {p['target']:.1f} | {p['judge']:.1f} | "
            f"{p['update']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_step_acceptance(rows: list[dict], methods: tuple[str, ...], path: Path) -> str | None:
    """Accepted steps per round, per problem, for each lookahead method (a cumulative mean: the learning curve)."""
    lookahead = [m for m in methods if m.startswith("lr-")]
    if not rows or not lookahead:
        return None
    from onlinespec.bench.plots import _figure, _save

    fig = _figure()
    ax = fig.add_subplot()
    for m in lookahead:
        accepted = rounds = 0
        curve = []
        for r in rows:
            accepted += r["methods"][m]["accepted"]
            rounds += r["methods"][m]["rounds"]
            curve.append(accepted / rounds if rounds else 0.0)
        ax.plot(range(1, len(curve) + 1), curve, label=m, marker=".")
    ax.set_xlabel("problem")
    ax.set_ylabel("step acceptance (cumulative)")
    ax.legend()
    return _save(fig, path)
