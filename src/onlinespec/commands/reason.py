"""`onlinespec reason "PROBLEM"`: solve one problem by lookahead reasoning (not token-lossless: a step the judge
accepts is the draft's text), optionally learning the draft online from the problem's preference pairs."""

from __future__ import annotations

import argparse
import json
import sys

from onlinespec.commands.common import owned_directory, quiet_transformers
from onlinespec.commands.flags import add_reasoning_flags
from onlinespec.errors import UserError

NAME = "reason"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help="solve one problem by lookahead reasoning (a draft model writes whole steps)")
    p.add_argument("problem", help="the problem text (a user turn; an instruction asks for short steps)")
    add_reasoning_flags(p)
    p.add_argument(
        "--learn",
        choices=("none", "sft", "dpo"),
        default=None,
        help="update the draft after the problem from its preference pairs (default: dpo with "
        "--draft-state, else none)",
    )
    p.add_argument(
        "--draft-state",
        default=None,
        metavar="DIR",
        help="load the learned draft from DIR before, save it after (created if missing)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    with owned_directory(args.draft_state, "draft state"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from onlinespec.models.resolve import load_model
    from onlinespec.online.state_store import load_state, save_state
    from onlinespec.reasoning.judges import make_judge
    from onlinespec.reasoning.problems import Problem, answer_value
    from onlinespec.reasoning.solve import solve_lookahead
    from onlinespec.reasoning.step_learner import StepPreferenceLearner
    from onlinespec.reasoning.stream_bench import ReasonBenchSettings

    if not args.problem.strip():
        raise UserError("the problem is empty: give the text of a problem to solve")
    learn = args.learn or ("dpo" if args.draft_state else "none")
    if learn == "none" and args.draft_state:
        raise UserError("--draft-state keeps a learned draft: drop it, or choose --learn sft or dpo")
    s = _settings(args, ReasonBenchSettings)
    s.check()
    quiet_transformers()
    target = load_model(s.target, s.dtype, s.weight_layout, s.attention)
    draft = load_model(s.draft, s.dtype, s.weight_layout, s.attention)
    draft_model, learner = draft.model, None
    if learn != "none":
        learner = StepPreferenceLearner(draft.model, draft.tokenizer, s.learner_config(learn))
        draft_model = learner.model
        state = load_state(args.draft_state) if args.draft_state else None
        if state is not None:
            learner.load(state[0], state[1])
    judge = make_judge(s.judge, target.model, target.tokenizer, s.min_overlap)
    problem = Problem("cli", args.problem, None)
    solution = solve_lookahead(
        problem.messages(),
        (draft_model, draft.tokenizer),
        (target.model, target.tokenizer),
        judge,
        s.depth,
        s.max_new_tokens,
        s.max_step_tokens,
    )
    update = None
    if learner is not None:
        for context_ids, pair in solution.pairs:
            learner.add(context_ids, pair)
        update = learner.update()
        if args.draft_state:
            tensors, learner_state, info = learner.state()
            save_state(args.draft_state, tensors, learner_state, {**info, "round": learner.updates})
    seconds = solution.seconds["total"] + (update["seconds"] if update else 0.0)
    payload = {
        "text": solution.text,
        "answer": answer_value(solution.text),
        "tokens": solution.tokens,
        "finished": solution.finished,
        "rounds": solution.rounds,
        "drafted_steps": solution.drafted,
        "accepted_steps": solution.accepted,
        "step_acceptance": solution.step_acceptance,
        "seconds": {**solution.seconds, "update": update["seconds"] if update else 0.0, "total": seconds},
        "tokens_per_s": solution.tokens / seconds if seconds else None,
        "pairs": len(solution.pairs),
        "update": update,
        "lossless": False,
        "config": {"target": s.target, "draft_model": s.draft, "judge": s.judge, "depth": s.depth, "learn": learn},
    }
    if args.json:
        print(json.dumps(payload))
        return 0
    print(solution.text)
    acceptance = "-" if solution.step_acceptance is None else f"{solution.step_acceptance:.2f}"
    print(
        f"[reason] {solution.tokens} tokens in {seconds:.1f} s = {payload['tokens_per_s']:.2f} tok/s | "
        f"{solution.rounds} rounds, {solution.accepted}/{solution.drafted} drafted steps accepted "
        f"({acceptance} per round) | judge {s.judge} | not token-lossless",
        file=sys.stderr,
    )
    if update is not None:
        print(
            f"[{learn}] {update['pairs']} pairs, update {update['seconds']:.2f} s"
            + (f", saved to {args.draft_state}" if args.draft_state else ""),
            file=sys.stderr,
        )
    return 0


def _settings(args: argparse.Namespace, cls, **preset):
    """The settings dataclass from the reasoning flags: a flag given wins over `preset`, which wins over the
    dataclass default."""
    from dataclasses import fields

    names = {"draft": "draft_model"}
    values = dict(preset)
    for f in fields(cls):
        flag = getattr(args, names.get(f.name, f.name), None)
        if flag is not None:
            values[f.name] = flag
    return cls(**values)
