"""Flag groups shared by the commands, each declared once: model, draft, draft trees and online learning.

Each `add_*` declares flags on a parser; each `*_from_args` turns the parsed flags into the library's config.
Heavy modules (torch, transformers) are imported inside the functions, so importing this file stays cheap.
"""

from __future__ import annotations

import argparse

LEARNING_RATE = 0.1  # OGD step on the clipped gradient; 1.0 was unstable on the embedded model (README)
TARGET_HELP = "target model spec (default: %(default)s)"


def add_model_flags(parser: argparse.ArgumentParser, target_help: str = TARGET_HELP, dtype: bool = True) -> None:
    """--target (a model spec, models/resolve.py) and, unless dtype=False, --dtype."""
    from onlinespec.models import DEFAULT_MODEL, DTYPES

    parser.add_argument("--target", default=DEFAULT_MODEL, help=target_help)
    if dtype:
        parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="(default: %(default)s)")


def add_draft_flags(
    parser: argparse.ArgumentParser, k_help: str = "drafted tokens per verify step (default: %(default)s)"
) -> None:
    """--draft (a draft spec; its help comes from the draft registry) and --k."""
    from onlinespec.drafts import DEFAULT_DRAFT, DEFAULT_K, draft_spec_help

    parser.add_argument("--draft", default=DEFAULT_DRAFT, help=draft_spec_help())
    parser.add_argument("--k", type=int, default=DEFAULT_K, help=k_help)


def add_tree_flags(parser: argparse.ArgumentParser) -> None:
    """Draft tree flags (decoding/tree.py), shared by every command that decodes."""
    from onlinespec.decoding.tree import TREE_KINDS

    group = parser.add_argument_group("draft trees (head drafts, greedy only)")
    group.add_argument(
        "--tree",
        choices=TREE_KINDS,
        default="chain",
        help="chain = k tokens in a line; static = EAGLE-1's 25-node tree; dynamic = EAGLE-2 (default: %(default)s)",
    )
    group.add_argument("--tree-depth", type=int, default=5, help="max tree depth (default: %(default)s)")
    group.add_argument("--tree-top-k", type=int, default=4, help="dynamic: children per expansion (default: 4)")
    group.add_argument("--tree-tokens", type=int, default=24, help="dynamic: nodes kept (default: %(default)s)")


def tree_config_from_args(args: argparse.Namespace):
    """The TreeConfig of the tree flags."""
    from onlinespec.decoding.tree import TreeConfig

    return TreeConfig(kind=args.tree, depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens)


def add_learning_flags(parser: argparse.ArgumentParser, default_learner: str = "static") -> argparse._ArgumentGroup:
    """Flags of the online learner (docs/method.md §2), shared by every command that decodes. Returns their group,
    to which `add_session_flags` adds the flags of a long-running session; without those, the session settings
    are OnlineConfig's defaults."""
    from onlinespec.online.learners import LEARNERS, PRECONDITIONERS, LearnerConfig
    from onlinespec.online.learners.base import HEDGE_RATES, LR_GRIDS
    from onlinespec.online.losses import LOSSES
    from onlinespec.online.session import SCHEDULES, OnlineConfig

    group = parser.add_argument_group("online learning of the draft")
    group.add_argument(
        "--learner",
        choices=tuple(LEARNERS),
        default=default_learner,
        help="static = no learning; sgd-momentum and adamw are ablations (default: %(default)s)",
    )
    group.add_argument("--lr", type=float, default=LEARNING_RATE, help="eta (default: %(default)s)")
    group.add_argument("--round-size", type=int, default=8, help="requests per round (default: %(default)s)")
    group.add_argument(
        "--round-tokens",
        type=int,
        default=0,
        help="if > 0, a round ends after this many new tokens instead (default: %(default)s)",
    )
    group.add_argument("--passes", type=int, default=1, help="gradient steps per round (default: %(default)s)")
    group.add_argument(
        "--clip", type=float, default=1.0, help="global gradient-norm clip, 0 = off (default: %(default)s)"
    )
    group.add_argument(
        "--radius",
        type=float,
        default=0.0,
        help="project onto this L2 ball around the warm start, 0 = off (default: %(default)s)",
    )
    group.add_argument("--experts", type=int, default=3, help="ensemble size (default: %(default)s)")
    group.add_argument(
        "--lr-ratio",
        type=float,
        default=LearnerConfig.lr_ratio,
        help="ensemble: expert i steps with lr * ratio**i (default: %(default)s)",
    )
    group.add_argument("--gamma", type=float, default=1.0, help="Hedge rate (default: %(default)s)")
    group.add_argument(
        "--momentum", type=float, default=LearnerConfig.momentum, help="sgd-momentum ablation (default: %(default)s)"
    )
    group.add_argument(
        "--betas",
        type=float,
        nargs=2,
        default=LearnerConfig.betas,
        metavar=("BETA1", "BETA2"),
        help="adamw ablation: moment decay rates (default: %(default)s)",
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        default=LearnerConfig.weight_decay,
        help="adamw ablation: decoupled weight decay (default: %(default)s)",
    )
    group.add_argument(
        "--step",
        choices=PRECONDITIONERS,
        default=LearnerConfig.step,
        help="per-coordinate step of ogd, optimistic and the ensemble's experts: sgd = the textbook rule "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--eps", type=float, default=LearnerConfig.eps, help="adagrad/adam: D = sqrt(.) + eps (default: %(default)s)"
    )
    group.add_argument(
        "--adam-betas",
        type=float,
        nargs=2,
        default=LearnerConfig.adam_betas,
        metavar=("BETA1", "BETA2"),
        help="--step adam: moment decay rates (default: %(default)s)",
    )
    group.add_argument(
        "--hint-ema",
        type=float,
        default=LearnerConfig.hint_ema,
        help="optimistic: hint = EMA of the gradients with this decay, 0 = the last gradient (default: %(default)s)",
    )
    group.add_argument(
        "--lr-grid",
        choices=LR_GRIDS,
        default=LearnerConfig.lr_grid,
        help="ensemble: up = lr * ratio**i; centred = lr in the middle of the grid (default: %(default)s)",
    )
    group.add_argument(
        "--hedge-rate",
        choices=HEDGE_RATES,
        default=LearnerConfig.hedge_rate,
        help="ensemble: fixed = --gamma; anytime = gamma * sqrt(8 ln N / t) / loss range (default: %(default)s)",
    )
    group.add_argument(
        "--share",
        type=float,
        default=LearnerConfig.share,
        help="ensemble: fixed-share mixing of the Hedge weights each round, 0 = off (default: %(default)s)",
    )
    group.add_argument(
        "--batch-requests",
        type=int,
        default=OnlineConfig.batch_requests,
        help="requests per mini-batch of a round's update, 0 = the whole round in one (default: %(default)s)",
    )
    group.add_argument(
        "--epochs",
        type=int,
        default=OnlineConfig.epochs,
        help="passes of a round's update over its mini-batches (default: %(default)s)",
    )
    group.add_argument(
        "--replay-positions",
        type=int,
        default=OnlineConfig.replay_positions,
        help="replay earlier rounds' feedback, at most this many positions, 0 = no replay (default: %(default)s)",
    )
    group.add_argument(
        "--unroll",
        type=int,
        default=OnlineConfig.unroll,
        help="EAGLE passes trained per request, 0 = the k it drafted with (default: %(default)s)",
    )
    group.add_argument(
        "--mask-oov",
        action=argparse.BooleanOptionalAction,
        default=OnlineConfig.mask_oov,
        help="skip positions whose target top-1 token is outside the draft vocabulary (default: %(default)s)",
    )
    group.add_argument(
        "--loss-after",
        action=argparse.BooleanOptionalAction,
        default=OnlineConfig.loss_after,
        help="evaluate each round's loss again after its update, telemetry (default: %(default)s)",
    )
    group.add_argument("--loss", choices=LOSSES, default="forward_kl", help="(default: %(default)s)")
    group.add_argument(
        "--train-positions",
        choices=("all", "mismatch"),
        default="all",
        help="verified positions to learn from (default: %(default)s)",
    )
    group.add_argument(
        "--feedback-top-k", type=int, default=64, help="entries of p kept per position, 0 = full (default: %(default)s)"
    )
    group.add_argument(
        "--feedback-max-positions",
        type=int,
        default=OnlineConfig.max_positions,
        help="feedback buffer bound: positions kept, the oldest dropped first (default: %(default)s)",
    )
    group.add_argument("--schedule", choices=SCHEDULES, default="overlap", help="(default: %(default)s)")
    group.add_argument(
        "--draft-state",
        default=None,
        metavar="DIR",
        help="load the evolving draft and learner from DIR and save them there",
    )
    group.add_argument("--telemetry", default=None, metavar="FILE", help="append per-round JSON lines to FILE")
    parser.set_defaults(
        checkpoint_every=OnlineConfig.save_every,
        save_in_background=OnlineConfig.save_in_background,
        wait_for_update=OnlineConfig.wait_for_update,
    )
    return group


def add_session_flags(group: argparse._ArgumentGroup, save_in_background: bool, wait_for_update: bool) -> None:
    """Flags of a long-running learning session (serve): save cadence, background saving, waiting for updates."""
    group.add_argument(
        "--checkpoint-every", type=int, default=1, help="save the draft state every N rounds (default: %(default)s)"
    )
    group.add_argument(
        "--save-in-background",
        action=argparse.BooleanOptionalAction,
        default=save_in_background,
        help="copy the draft state at the round boundary, write it in a thread (default: %(default)s)",
    )
    group.add_argument(
        "--wait-for-update",
        action=argparse.BooleanOptionalAction,
        default=wait_for_update,
        help="overlap schedule: a round boundary waits for a running update; if not, the boundary is postponed "
        "and decoding never waits (default: %(default)s)",
    )


def online_config_from_args(args: argparse.Namespace):
    """The one mapping from the learning flags to an OnlineConfig (every LearnerConfig/OnlineConfig field)."""
    from onlinespec.online.learners import LearnerConfig
    from onlinespec.online.session import OnlineConfig

    return OnlineConfig(
        learner=args.learner,
        learner_cfg=LearnerConfig(
            lr=args.lr,
            clip=args.clip,
            radius=args.radius,
            passes=args.passes,
            experts=args.experts,
            lr_ratio=args.lr_ratio,
            gamma=args.gamma,
            momentum=args.momentum,
            betas=tuple(args.betas),
            weight_decay=args.weight_decay,
            step=args.step,
            eps=args.eps,
            adam_betas=tuple(args.adam_betas),
            hint_ema=args.hint_ema,
            lr_grid=args.lr_grid,
            hedge_rate=args.hedge_rate,
            share=args.share,
        ),
        round_requests=args.round_size,
        round_tokens=args.round_tokens,
        loss=args.loss,
        positions=args.train_positions,
        top_k=args.feedback_top_k,
        max_positions=args.feedback_max_positions,
        schedule=args.schedule,
        state_dir=args.draft_state,
        save_every=args.checkpoint_every,
        save_in_background=args.save_in_background,
        wait_for_update=args.wait_for_update,
        telemetry=args.telemetry,
        batch_requests=args.batch_requests,
        epochs=args.epochs,
        replay_positions=args.replay_positions,
        unroll=args.unroll,
        mask_oov=args.mask_oov,
        loss_after=args.loss_after,
    )


def wants_learning(args: argparse.Namespace) -> bool:
    """True when the flags ask for a learning session: a learner other than static, or a draft state to keep."""
    return args.learner != "static" or args.draft_state is not None
