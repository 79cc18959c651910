"""`onlinespec serve`: an OpenAI-compatible HTTP API whose draft learns from its traffic (library: onlinespec.serve)."""

from __future__ import annotations

import argparse
import os

from onlinespec.commands.common import config_from_args, owned_directory, quiet_transformers
from onlinespec.commands.flags import (
    add_draft_flags,
    add_learning_flags,
    add_model_flags,
    add_session_flags,
    online_config_from_args,
    wants_learning,
)
from onlinespec.errors import UserError

NAME = "serve"
API_KEY_ENV = "ONLINESPEC_API_KEY"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help="serve an OpenAI-compatible HTTP API whose draft learns from its traffic")
    add_model_flags(p)
    add_draft_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on every endpoint but /health (default: ${API_KEY_ENV}, else none)",
    )
    p.add_argument("--model-name", default=None, help="model id clients send and /v1/models lists (default: --target)")
    p.add_argument("--max-queue", type=int, default=16, help="waiting requests before 503 (default: %(default)s)")
    p.add_argument(
        "--request-timeout", type=float, default=300.0, help="seconds from arrival to abort, 504 (default: %(default)s)"
    )
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body limit, 413 (default: %(default)s)")
    p.add_argument(
        "--max-tokens-limit", type=int, default=4096, help="largest max_tokens allowed (default: %(default)s)"
    )
    p.add_argument(
        "--max-request-tokens",
        type=int,
        default=0,
        help="admission rule: refuse (400) a request whose prompt plus max_tokens exceeds this many tokens, so one "
        "request cannot hold the single decoder for long; 0 = only the model's context (default: %(default)s)",
    )
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=256,
        help="max_tokens when a request gives none (default: %(default)s)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds in-flight requests get to finish after SIGTERM/SIGINT (default: %(default)s)",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    # The default learner depends on the draft (`default_learner`): the flag's default stays None until it is known.
    learning = add_learning_flags(p, default_learner=None)
    # Decoding never waits for the learner: a round boundary that finds the last update still running is
    # postponed, and snapshots are copied at the boundary and written in a thread (~1 s for a layerskip:4
    # draft of the embedded model with its OGD state, which would otherwise stall decoding every checkpoint).
    add_session_flags(learning, save_in_background=True, wait_for_update=False)


def default_learner(pipe) -> str:
    """serve's learner unless --learner says: `count` for a draft that learns by counting (the default hybrid
    draft, whose head then stays frozen, and the lookup draft), `ogd` for a draft that learns by gradient only,
    `static` without a draft. Measured on the 2-core CPU (docs/serving.md, load benchmark): with the default
    hybrid, `count` served at 18.4 tok/s and tau 1.87, `ogd` (head and index) at 16.3 tok/s and tau 1.86, frozen
    at 18.8 tok/s and tau 1.74: the head's updates cost the decoder CPU that its learning does not win back."""
    from onlinespec.online.counting_draft import COUNT, CountingDraft

    if pipe.engine is None:
        return "static"
    return COUNT if isinstance(pipe.engine.draft, CountingDraft) else "ogd"


def check_flags(args: argparse.Namespace) -> None:
    """Everything that needs no model, so a typo costs no loading time."""
    from onlinespec.serve.address import check_port_free

    positive = {
        "--k": args.k,
        "--max-queue": args.max_queue,
        "--request-timeout": args.request_timeout,
        "--max-body-bytes": args.max_body_bytes,
        "--max-tokens-limit": args.max_tokens_limit,
        "--default-max-tokens": args.default_max_tokens,
        "--checkpoint-every": args.checkpoint_every,
    }
    for flag, value in positive.items():
        if value is not None and value <= 0:  # --k: None = the draft's default
            raise UserError(f"{flag} must be > 0, got {value}")
    if args.max_request_tokens < 0:
        raise UserError(f"--max-request-tokens must be >= 0 (0 = off), got {args.max_request_tokens}")
    if args.shutdown_grace < 0:
        raise UserError(f"--shutdown-grace must be >= 0, got {args.shutdown_grace}")
    if args.default_max_tokens > args.max_tokens_limit:
        raise UserError("--default-max-tokens must not exceed --max-tokens-limit")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.api_key is not None and not args.api_key.strip():
        raise UserError("--api-key is empty: give a key, or leave the flag out")
    check_port_free(args.host, args.port)


def run(args: argparse.Namespace) -> int:
    with owned_directory(args.draft_state, "draft state"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    check_flags(args)
    try:
        from onlinespec.serve.app import ServeSettings
        from onlinespec.serve.launch import ServerOptions, serve_pipeline
        from onlinespec.serve.server import log, setup_logging
    except ImportError as exc:
        raise UserError(f"serving needs FastAPI and uvicorn ({exc.name} is missing): pip install onlinespec") from None
    from onlinespec.pipeline import Pipeline
    from onlinespec.serve.address import is_loopback

    setup_logging(args.log_level)
    if not is_loopback(args.host) and args.api_key is None:
        log.warning("listening on %s without --api-key: anyone who can reach it can use it", args.host)
    quiet_transformers()
    pipe = Pipeline.load(
        target=args.target,
        draft=args.draft,
        dtype=args.dtype,
        verify_cost=args.verify_cost,
        weight_layout=args.weight_layout,
        attention=args.attention,
    )
    why = f" (--dtype auto: {pipe.target.dtype_reason})" if pipe.target.dtype_reason else ""
    log.info("target %s in %s%s", args.target, pipe.target.dtype, why)
    if args.learner is None:
        args.learner = default_learner(pipe)
    if wants_learning(args):
        if pipe.engine is None:
            raise UserError("online learning needs a draft: pass --draft (e.g. layerskip:4), or --learner static")
        restored = pipe.enable_learning(online_config_from_args(args)).status().round
        if args.draft_state:
            if restored:
                log.info("restored draft state (round %d) from %s", restored, args.draft_state)
            else:
                log.info("no draft state in %s yet: starting from the initial draft", args.draft_state)
    settings = config_from_args(
        ServeSettings, args, model_name=args.model_name or args.target, request_timeout_s=args.request_timeout
    )
    options = config_from_args(ServerOptions, args, shutdown_grace_s=args.shutdown_grace)
    learner = pipe.online.status().learner if pipe.online is not None else "static"  # `count` for a lookup draft
    serve_pipeline(pipe, settings, options, learner=learner)
    return 0
