"""Running the app: uvicorn in the main thread, signals, graceful shutdown and the final checkpoint.

SIGTERM or SIGINT: stop accepting connections and new requests (503), let queued and running requests finish
within the grace period, abort the rest cleanly (an error event or a 503, never a half-written body), then stop
the decoder, wait for the learner's pending update, publish it and save the state (worker.shutdown, called by
the app's lifespan). SIGKILL skips all of that; the state store's atomic snapshots make sure it loses at most the
rounds since the last checkpoint, never the file.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import uvicorn

from onlinespec.serve.worker import Worker

log = logging.getLogger("onlinespec.serve")


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("onlinespec serve: %(message)s"))
    for logger in (log, logging.getLogger("onlinespec.online")):  # the learner's checkpoint warnings too
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


class GracefulServer(uvicorn.Server):
    """uvicorn's server, telling the worker as soon as a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig, frame) -> None:
        self._on_signal()
        super().handle_exit(sig, frame)


def run_server(app, worker: Worker, host: str, port: int, grace_s: float, log_level: str = "info") -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        # uvicorn cancels whatever still runs after this; our own abort at grace_s comes first and is clean.
        timeout_graceful_shutdown=grace_s + 2.0,
    )
    server = GracefulServer(config, on_signal=lambda: worker.begin_shutdown(grace_s))
    try:
        server.run()
    finally:
        worker.shutdown()  # idempotent; here for a forced exit (second Ctrl-C), which skips the app's shutdown
