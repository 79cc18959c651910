"""Flag groups shared by the commands, each declared once: model, draft, draft trees and online learning.

Each `add_*` declares flags on a parser; each `*_from_args` turns the parsed flags into the library's config.
Heavy modules (torch, transformers) are imported inside the functions, so importing this file stays cheap.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass
from dataclasses import field as dataclass_field
from typing import Any

TARGET_HELP = "target model spec (default: %(default)s)"


def add_model_flags(parser: argparse.ArgumentParser, target_help: str = TARGET_HELP, dtype: bool = True) -> None:
    """--target (a model spec, models/resolve.py) and, unless dtype=False, --dtype, --weight-layout and --attention."""
    from onlinespec.models import DEFAULT_MODEL
    from onlinespec.models.resolve import DTYPE_CHOICES
    from onlinespec.models.weight_layout import WEIGHT_LAYOUT_MODES

    parser.add_argument("--target", default=DEFAULT_MODEL, help=target_help)
    if dtype:
        parser.add_argument(
            "--dtype",
            choices=DTYPE_CHOICES,
            default="auto",
            help="the target's dtype: auto = bfloat16 where this CPU has bf16 instructions and runs the target at "
            "least 10%% faster in it (measured once, cached), else float32. Greedy outputs equal autoregressive "
            "ones exactly in float32; in bfloat16 they can part at near-ties (default: %(default)s)",
        )
        parser.add_argument(
            "--weight-layout",
            choices=WEIGHT_LAYOUT_MODES,
            default="auto",
            help="how the target's linear weights lie in memory: auto = whichever runs forwards over 1-3 tokens "
            "fastest on this machine (measured once, cached); standard = as loaded; transposed; packed = plus a "
            "copy pre-blocked for oneDNN (bfloat16 only; same outputs, twice the weights' memory) "
            "(default: %(default)s)",
        )
        add_attention_flag(parser)


def add_attention_flag(parser: argparse.ArgumentParser) -> None:
    """--attention (models/attention.py)."""
    from onlinespec.models.attention import ATTENTION_MODES

    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default="auto",
        help="how the target attends: folded = the query heads sharing a KV head in one call (bfloat16/float16 "
        "models with grouped heads; same attention, rounded differently); sdpa = as transformers runs it; auto = "
        "folded where this machine runs it at least 5%% faster (measured once, cached), else sdpa; "
        "$ONLINESPEC_ATTENTION decides auto (default: %(default)s)",
    )


K_HELP = (
    "drafted tokens per verify step (default: the draft's own: 7 for auto, lookup and hybrid, whose lookup chains "
    "the verify-cost rule trims to what pays here; 2 for head drafts alone, layerskip and draft models)"
)


def add_draft_flags(parser: argparse.ArgumentParser, k_help: str = K_HELP) -> None:
    """--draft (a draft spec; its help comes from the draft registry) and --k."""
    from onlinespec.decoding.verify_cost import VERIFY_COST_MODES
    from onlinespec.drafts import DEFAULT_DRAFT, draft_spec_help

    parser.add_argument("--draft", default=DEFAULT_DRAFT, help=draft_spec_help())
    parser.add_argument("--k", type=int, default=None, help=k_help)
    parser.add_argument(
        "--verify-cost",
        choices=VERIFY_COST_MODES,
        default="auto",
        help="auto: measure once what a target forward over 1..9 tokens costs on this machine (cached) and verify "
        "only as many drafted tokens as are expected to pay for it; off: verify all k (default: %(default)s)",
    )


def add_tree_flags(parser: argparse.ArgumentParser) -> None:
    """Draft tree flags (decoding/tree.py), shared by every command that decodes."""
    from onlinespec.decoding.tree import TREE_KINDS

    group = parser.add_argument_group("draft trees (head drafts and the hybrid, greedy only)")
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


@dataclass(frozen=True)
class ConfigFlag:
    """A flag that sets one field of LearnerConfig (`config="learner"`) or OnlineConfig (`config="online"`). Its
    type and default come from the field (a bool becomes --flag/--no-flag, a pair takes two numbers); `default`
    overrides the field's default for the CLI, `options` are further add_argument keywords (choices, metavar)."""

    config: str
    field: str
    help: str
    flag: str = ""  # the flag's name when it is not --field-with-dashes
    default: Any = None  # the CLI's default when it differs from the field's (None: the field's)
    options: dict = dataclass_field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.flag or "--" + self.field.replace("_", "-")

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


SESSION_FIELDS = ("save_every", "save_in_background", "wait_for_update")  # serve's own flags (add_session_flags)


def learning_flags() -> tuple[ConfigFlag, ...]:
    """Every learning flag but --learner, in help order; one entry per config field (tests check all are here)."""
    from onlinespec.online.feedback_buffer import POSITION_MODES
    from onlinespec.online.learners import PRECONDITIONERS
    from onlinespec.online.learners.base import HEDGE_RATES, LR_GRIDS
    from onlinespec.online.losses import LOSSES
    from onlinespec.online.session import SCHEDULES

    L, O = "learner", "online"  # noqa: E741, N806
    pair, positions = {"metavar": ("BETA1", "BETA2")}, {"choices": POSITION_MODES}
    return (
        ConfigFlag(
            L, "lr", "eta; default: per learner and step (sgd 0.1, adam 5e-4, adagrad 1e-3)", options={"type": float}
        ),
        ConfigFlag(O, "round_requests", "requests per round", flag="--round-size"),
        ConfigFlag(O, "round_tokens", "if > 0, a round ends after this many new tokens instead"),
        ConfigFlag(
            O, "index_every", "lookup/hybrid drafts: learn the n-gram index after every N requests, 0 = at round ends"
        ),
        ConfigFlag(L, "passes", "gradient steps per round"),
        ConfigFlag(L, "clip", "global gradient-norm clip, 0 = off"),
        ConfigFlag(L, "radius", "project onto this L2 ball around the warm start, 0 = off"),
        ConfigFlag(L, "experts", "ensemble size"),
        ConfigFlag(L, "lr_ratio", "ensemble: expert i steps with lr * ratio**i"),
        ConfigFlag(L, "gamma", "Hedge rate"),
        ConfigFlag(L, "momentum", "sgd-momentum ablation"),
        ConfigFlag(L, "betas", "adamw ablation: moment decay rates", options=pair),
        ConfigFlag(L, "weight_decay", "adamw ablation: decoupled weight decay"),
        ConfigFlag(
            L,
            "step",
            "per-coordinate step of ogd, optimistic and the ensemble's experts: sgd = the textbook rule",
            options={"choices": PRECONDITIONERS},
        ),
        ConfigFlag(L, "eps", "adagrad/adam: D = sqrt(.) + eps"),
        ConfigFlag(L, "adam_betas", "--step adam: moment decay rates", options=pair),
        ConfigFlag(L, "hint_ema", "optimistic: hint = EMA of the gradients with this decay, 0 = the last gradient"),
        ConfigFlag(
            L,
            "lr_grid",
            "ensemble: up = lr * ratio**i; centred = lr in the middle of the grid",
            options={"choices": LR_GRIDS},
        ),
        ConfigFlag(
            L,
            "hedge_rate",
            "ensemble: fixed = --gamma; anytime = gamma * sqrt(8 ln N / t) / loss range",
            options={"choices": HEDGE_RATES},
        ),
        ConfigFlag(L, "share", "ensemble: fixed-share mixing of the Hedge weights each round, 0 = off"),
        ConfigFlag(
            L,
            "lr_warmup",
            "ramp the step size over the first N updates, 0 = off; default: per step (adam, adagrad 10, sgd 0)",
            options={"type": int},
        ),
        ConfigFlag(O, "batch_requests", "requests per mini-batch of a round's update, 0 = the whole round in one"),
        ConfigFlag(O, "epochs", "passes of a round's update over its mini-batches"),
        ConfigFlag(
            O, "replay_positions", "replay earlier rounds' feedback, at most this many positions, 0 = no replay"
        ),
        ConfigFlag(O, "unroll", "EAGLE passes trained per request, 0 = the k it drafted with"),
        ConfigFlag(O, "mask_oov", "skip positions whose target top-1 token is outside the draft vocabulary"),
        ConfigFlag(
            O, "prompt_positions", "also learn from the last N prompt positions of each request (head drafts), 0 = off"
        ),
        ConfigFlag(O, "loss_after", "evaluate each round's loss again after its update, telemetry"),
        ConfigFlag(O, "loss", "", options={"choices": LOSSES}),
        ConfigFlag(
            O,
            "positions",
            "verified positions to learn from",
            flag="--train-positions",
            options=positions,
        ),
        ConfigFlag(O, "top_k", "entries of p kept per position, 0 = full", flag="--feedback-top-k"),
        ConfigFlag(
            O,
            "max_positions",
            "feedback buffer bound: positions kept, the oldest dropped first",
            flag="--feedback-max-positions",
        ),
        ConfigFlag(O, "schedule", "", options={"choices": SCHEDULES}),
        ConfigFlag(
            O,
            "state_dir",
            "load the evolving draft and learner from DIR and save them there",
            flag="--draft-state",
            options={"metavar": "DIR"},
        ),
        ConfigFlag(O, "telemetry", "append per-round JSON lines to FILE", options={"metavar": "FILE"}),
        ConfigFlag(O, "save_every", "save the draft state every N rounds", flag="--checkpoint-every"),
        ConfigFlag(O, "save_in_background", "copy the draft state at the round boundary, write it in a thread"),
        ConfigFlag(
            O,
            "wait_for_update",
            "overlap schedule: a round boundary waits for a running update; if not, the boundary is postponed "
            "and decoding never waits",
        ),
    )


def _add(group: argparse._ArgumentGroup, flag: ConfigFlag, default: Any = MISSING) -> None:
    """Declare `flag` with its field's type and default (or `default`)."""
    from onlinespec.online.learners import LearnerConfig
    from onlinespec.online.session import OnlineConfig

    config = LearnerConfig if flag.config == "learner" else OnlineConfig
    if default is MISSING:
        default = flag.default if flag.default is not None else getattr(config, flag.field)
    kwargs: dict[str, Any] = {"default": default, **flag.options}
    if isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(default, tuple):
        kwargs.update(type=float, nargs=len(default))
    elif default is not None and "choices" not in flag.options:
        kwargs["type"] = type(default)
    suffix = " (default: %(default)s)" if default is not None else ""
    group.add_argument(flag.name, help=(flag.help + suffix).strip(), **kwargs)


def add_learning_flags(
    parser: argparse.ArgumentParser, default_learner: str | None = "static"
) -> argparse._ArgumentGroup:
    """Flags of the online learner (docs/method.md §2), shared by every command that decodes. Returns their group,
    to which `add_session_flags` adds the flags of a long-running session; without those, the session settings
    are OnlineConfig's defaults. default_learner None: the command picks one by draft (serve: `count` for drafts
    that learn by counting, `ogd` for the others)."""
    from onlinespec.online.counting_draft import COUNT
    from onlinespec.online.learners import LEARNERS
    from onlinespec.online.session import OnlineConfig

    group = parser.add_argument_group("online learning of the draft")
    group.add_argument(
        "--learner",
        choices=(*LEARNERS, COUNT),
        default=default_learner,
        help=f"static = no learning; sgd-momentum and adamw are ablations; {COUNT} = learning without gradients: "
        "the lookup draft's index, or the hybrid draft's index with its head frozen (with --draft lookup every "
        "learner but static counts) (default: "
        + (default_learner or f"{COUNT} for the hybrid and lookup drafts, ogd for the others, static without a draft")
        + ")",
    )
    session = []
    for flag in learning_flags():
        if flag.field in SESSION_FIELDS:
            session.append(flag)
        else:
            _add(group, flag)
    parser.set_defaults(**{flag.dest: getattr(OnlineConfig, flag.field) for flag in session})
    return group


def add_session_flags(group: argparse._ArgumentGroup, save_in_background: bool, wait_for_update: bool) -> None:
    """Flags of a long-running learning session (serve): save cadence, background saving, waiting for updates."""
    defaults = {"save_every": 1, "save_in_background": save_in_background, "wait_for_update": wait_for_update}
    for flag in learning_flags():
        if flag.field in SESSION_FIELDS:
            _add(group, flag, defaults[flag.field])


def online_config_from_args(args: argparse.Namespace):
    """The one mapping from the learning flags to an OnlineConfig (every LearnerConfig/OnlineConfig field)."""
    from onlinespec.online.learners import LearnerConfig
    from onlinespec.online.session import OnlineConfig

    values: dict[str, dict[str, Any]] = {"learner": {}, "online": {}}
    for flag in learning_flags():
        value = getattr(args, flag.dest)
        values[flag.config][flag.field] = tuple(value) if isinstance(value, list) else value
    return OnlineConfig(learner=args.learner, learner_cfg=LearnerConfig(**values["learner"]), **values["online"])


def wants_learning(args: argparse.Namespace) -> bool:
    """True when the flags ask for a learning session: a learner other than static, or a draft state to keep."""
    return args.learner != "static" or args.draft_state is not None


def add_reasoning_flags(parser: argparse.ArgumentParser) -> None:
    """Lookahead-reasoning flags shared by `reason` and `reason-bench` (reasoning/): the two models, the judge,
    the lookahead and the draft's online preference learning."""
    from onlinespec.models import DTYPES
    from onlinespec.models.weight_layout import WEIGHT_LAYOUT_MODES
    from onlinespec.reasoning.judges import JUDGES

    parser.add_argument(
        "--target",
        default="qwen2.5-coder-1.5b",
        help="the model whose answers count (default: %(default)s; its install line is in the README)",
    )
    parser.add_argument(
        "--draft-model",
        default="smollm2-135m",
        help="the model that drafts whole steps; any tokenizer (default: %(default)s)",
    )
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="(default: %(default)s)")
    parser.add_argument(
        "--weight-layout",
        choices=WEIGHT_LAYOUT_MODES,
        default="auto",
        help="the target's and the draft's linear weights' layout, as for generate (default: %(default)s)",
    )
    add_attention_flag(parser)
    parser.add_argument(
        "--judge",
        choices=JUDGES,
        default=None,
        help="overlap: same numbers and shared words "
        "(cheap); exact: equal after normalising; target: the target answers yes/no; numbers-target: the same "
        "numbers first, then the target's yes (default: overlap)",
    )
    parser.add_argument(
        "--min-overlap", type=float, default=None, help="the overlap judge's word Jaccard threshold (default: 0.5)"
    )
    parser.add_argument("--depth", type=int, default=None, help="steps drafted per round (default: 4)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="answer length cap in target tokens (default: 256)"
    )
    parser.add_argument("--max-step-tokens", type=int, default=None, help="a step's length cap (default: 100)")
    parser.add_argument("--lr", type=float, default=None, help="the draft's Adam learning rate (default: 1e-5)")
    parser.add_argument("--beta", type=float, default=None, help="DPO temperature (default: 0.1)")
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        help="0: learn all the draft's weights; r > 0: LoRA adapters of rank r (default: 0)",
    )
    parser.add_argument(
        "--steps-per-update", type=int, default=None, help="Adam steps on each round's pairs (default: 1)"
    )
