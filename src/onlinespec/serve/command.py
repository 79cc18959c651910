"""`onlinespec serve`: its flags and its handler. cli.py registers it with `add_serve_parser(commands)`."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from dataclasses import replace

from onlinespec.errors import UserError

API_KEY_ENV = "ONLINESPEC_API_KEY"


def add_serve_parser(commands) -> argparse.ArgumentParser:
    from onlinespec.cli import add_learning_flags
    from onlinespec.drafts import DEFAULT_DRAFT, DEFAULT_K
    from onlinespec.models import DEFAULT_MODEL, DTYPES

    p = commands.add_parser("serve", help="serve an OpenAI-compatible HTTP API whose draft learns from its traffic")
    p.add_argument("--target", default=DEFAULT_MODEL, help="target model spec (default: %(default)s)")
    p.add_argument("--draft", default=DEFAULT_DRAFT, help="draft spec, or none (default: %(default)s)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="drafted tokens per verify step (default: %(default)s)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="(default: %(default)s)")
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
        "--default-max-tokens",
        type=int,
        default=256,
        help="max_tokens when a request gives none (default: %(default)s)",
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=1, help="save the draft state every N rounds (default: %(default)s)"
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds in-flight requests get to finish after SIGTERM/SIGINT (default: %(default)s)",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    add_learning_flags(p, default_learner="ogd")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Everything that needs no model, so a typo costs no loading time."""
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
        if value <= 0:
            raise UserError(f"{flag} must be > 0, got {value}")
    if args.shutdown_grace < 0:
        raise UserError(f"--shutdown-grace must be >= 0, got {args.shutdown_grace}")
    if args.default_max_tokens > args.max_tokens_limit:
        raise UserError("--default-max-tokens must not exceed --max-tokens-limit")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.api_key is not None and not args.api_key.strip():
        raise UserError("--api-key is empty: give a key, or leave the flag out")
    check_port_free(args.host, args.port)


def check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve --host '{host}': {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    check_flags(args)
    from onlinespec.cli import _quiet_transformers, online_config_from_args, wants_learning

    try:
        from onlinespec.serve.app import ServeSettings, build_app
        from onlinespec.serve.metrics import ServerMetrics
        from onlinespec.serve.server import log, run_server, setup_logging
        from onlinespec.serve.tokens import PromptEncoder
        from onlinespec.serve.worker import Worker
    except ImportError as exc:
        raise UserError(f"serving needs FastAPI and uvicorn ({exc.name} is missing): pip install onlinespec") from None
    from onlinespec.drafts import target_vocab_size
    from onlinespec.pipeline import Pipeline

    setup_logging(args.log_level)
    if not is_loopback(args.host) and args.api_key is None:
        log.warning("listening on %s without --api-key: anyone who can reach it can use it", args.host)
    _quiet_transformers()
    pipe = Pipeline.load(target=args.target, draft=args.draft, dtype=args.dtype)
    if wants_learning(args):
        if pipe.engine is None:
            raise UserError("online learning needs a draft: pass --draft (e.g. layerskip:4), or --learner static")
        # Decoding never waits for the learner: a round boundary that finds the last update still running is
        # postponed, and snapshots are copied at the boundary and written in a thread (~1 s for a layerskip:4
        # draft of the embedded model with its OGD state, which would otherwise stall decoding every checkpoint).
        cfg = replace(
            online_config_from_args(args),
            save_every=args.checkpoint_every,
            save_in_background=True,
            wait_for_update=False,
        )
        restored = pipe.enable_learning(cfg).status().round
        if args.draft_state:
            if restored:
                log.info("restored draft state (round %d) from %s", restored, args.draft_state)
            else:
                log.info("no draft state in %s yet: starting from the initial draft", args.draft_state)
    settings = ServeSettings(
        model_name=args.model_name or args.target,
        k=args.k,
        api_key=args.api_key,
        max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout,
        max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=args.default_max_tokens,
    )
    metrics = ServerMetrics(learner=args.learner)
    worker = Worker(pipe, metrics, max_queue=args.max_queue, request_timeout_s=args.request_timeout)
    encoder = PromptEncoder(
        pipe.tokenizer, target_vocab_size(pipe.target), pipe.context_length, args.default_max_tokens
    )
    app = build_app(settings, worker, encoder, metrics)
    run_server(app, worker, args.host, args.port, args.shutdown_grace, args.log_level)
    return 0
