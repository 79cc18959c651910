"""`serve_pipeline`: serve a loaded pipeline over HTTP until a shutdown signal, without the CLI.

    from onlinespec.pipeline import Pipeline
    from onlinespec.serve.app import ServeSettings
    from onlinespec.serve.launch import ServerOptions, serve_pipeline

    pipe = Pipeline.load(target="smollm2-135m", draft="auto")
    serve_pipeline(pipe, ServeSettings(model_name="smollm2-135m"), ServerOptions(port=8000), learner="static")

Needs FastAPI and uvicorn (imported by this module).
"""

from __future__ import annotations

from dataclasses import dataclass

from onlinespec.drafts import target_vocab_size
from onlinespec.pipeline import Pipeline
from onlinespec.serve.app import ServeSettings, build_app
from onlinespec.serve.metrics import ServerMetrics
from onlinespec.serve.server import run_server
from onlinespec.serve.tokens import PromptEncoder
from onlinespec.serve.worker import Worker


@dataclass
class ServerOptions:
    """How the server runs (ServeSettings holds what the API accepts)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_queue: int = 16  # waiting requests before 503
    shutdown_grace_s: float = 10.0  # seconds in-flight requests get to finish after SIGTERM/SIGINT
    log_level: str = "info"


def serve_pipeline(pipe: Pipeline, settings: ServeSettings, options: ServerOptions, learner: str) -> None:
    """Serve `pipe` (learning if `pipe.enable_learning` was called) until a shutdown signal. learner: the
    learner's name for /metrics ("static" without one). Returns after the final checkpoint."""
    metrics = ServerMetrics(learner=learner)
    worker = Worker(pipe, metrics, max_queue=options.max_queue, request_timeout_s=settings.request_timeout_s)
    encoder = PromptEncoder(
        pipe.tokenizer, target_vocab_size(pipe.target), pipe.context_length, settings.default_max_tokens
    )
    app = build_app(settings, worker, encoder, metrics)
    run_server(app, worker, options.host, options.port, options.shutdown_grace_s, options.log_level)
