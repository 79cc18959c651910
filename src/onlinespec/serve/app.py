"""The HTTP routes: OpenAI-compatible completions and chat completions (JSON or server-sent events), models,
health, Prometheus metrics and the live draft's identity. Decoding happens on the worker's thread; handlers only
validate, encode, queue and relay."""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.errors import UserError
from onlinespec.serve.errors import ApiError, bad_request
from onlinespec.serve.metrics import CONTENT_TYPE, ServerMetrics
from onlinespec.serve.responses import DONE_EVENT, ResponseShape, sse
from onlinespec.serve.schemas import CompletionRequest, parse_json, parse_request
from onlinespec.serve.tokens import PromptEncoder
from onlinespec.serve.worker import Delta, Done, Failed, Job, Worker

NO_LEARN_HEADER = "X-OnlineSpec-No-Learn"  # "1"/"true": serve the request without learning from it
TRUE_VALUES, FALSE_VALUES = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
ROUTES = ("/health", "/metrics", "/draft", "/v1/models", "/v1/completions", "/v1/chat/completions")
DISCONNECT_POLL_S = 0.5


@dataclass(frozen=True)
class ServeSettings:
    model_name: str  # the id /v1/models lists and requests may name
    k: int | None = None  # drafted tokens per verify step; None = the draft's default
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 300.0
    max_tokens_limit: int = 4096
    default_max_tokens: int = 256
    max_request_tokens: int = 0  # admission: prompt + max_tokens at most this (0 = only the model's context)


def build_app(settings: ServeSettings, worker: Worker, encoder: PromptEncoder, metrics: ServerMetrics) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        worker.start()
        yield
        await run_in_threadpool(worker.shutdown)  # waits for the decoder, then the learner's last update and save

    app = FastAPI(title="onlinespec", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(CountResponses, metrics=metrics)
    started = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail)).response()

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    auth = [Depends(authorize)]

    @app.api_route("/health", methods=["GET", "HEAD"])  # probes often use HEAD
    async def health() -> dict:
        learning = worker.learning_status()
        return {
            "status": "ok" if worker.accepting else "shutting_down",
            "model": settings.model_name,
            "draft": getattr(worker.pipe.draft, "name", None),
            "learner": learning.learner if learning else None,
            "round": learning.round if learning else 0,
            "queue_depth": worker.jobs.qsize(),
            "in_flight": worker.in_flight,
            "checkpoints": checkpoint_health(learning),
        }

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict:
        model = {"id": settings.model_name, "object": "model", "created": started, "owned_by": "onlinespec"}
        return {"object": "list", "data": [model]}

    @app.get("/metrics", dependencies=auth)
    async def prometheus() -> Response:
        learning = worker.learning_status()
        draft_round = learning.round if learning else 0
        if learning:
            metrics.observe_checkpoints(learning.checkpoints, learning.checkpoint_failures)
        metrics.observe_draft_memory(worker.draft_memory())
        metrics.observe_draft_sources(worker.draft_sources())
        return Response(metrics.render(worker.jobs.qsize(), worker.in_flight, draft_round), media_type=CONTENT_TYPE)

    @app.get("/draft", dependencies=auth)
    async def draft() -> dict:
        return await run_in_threadpool(worker.draft_info)

    @app.post("/v1/completions", dependencies=auth)
    async def completions(request: Request):
        return await complete(request, "completion")

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request):
        return await complete(request, "chat")

    async def complete(request: Request, kind: str):
        check_content_type(request)
        body = parse_json(await read_body(request, settings.max_body_bytes))
        req = parse_request(body, kind, settings.max_tokens_limit)
        if req.model is not None and req.model != settings.model_name:
            raise ApiError(
                404,
                f"model '{req.model}' does not exist: this server serves '{settings.model_name}' (see /v1/models)",
                param="model",
                code="model_not_found",
            )
        learn = wants_learning(request)
        prompt_ids = await run_in_threadpool(encoder.encode, req)  # a long prompt must not stall the event loop
        max_new_tokens = encoder.max_new_tokens(req, prompt_ids.shape[0])
        admit(prompt_ids.shape[0], max_new_tokens, settings.max_request_tokens)
        cfg = generation_config(req, max_new_tokens, settings.k)
        job = Job(
            prompt_ids=prompt_ids,
            cfg=cfg,
            learn=learn,
            stream=req.stream,
            deadline=time.monotonic() + settings.request_timeout_s,
            loop=asyncio.get_running_loop(),
        )
        worker.submit(job)
        shape = ResponseShape(kind, settings.model_name)
        if req.stream:
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(stream_events(job, req, shape), media_type="text/event-stream", headers=headers)
        done = await wait_done(job, request)
        return JSONResponse(shape.full(done.result, done.speculative))

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = ApiError(413, f"the request body is larger than {limit} bytes (--max-body-bytes)", code="too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


JSON_TYPES = ("application/json",)


def check_content_type(request: Request) -> None:
    """A body sent as JSON, or with no type at all (many clients send none); text/plain, forms, ... are refused
    rather than parsed as JSON by accident."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";")[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise ApiError(
            415,
            f"the request body must be JSON, not '{media}': send it with 'Content-Type: application/json'",
            code="unsupported_media_type",
        )


def admit(prompt_tokens: int, max_new_tokens: int, budget: int) -> None:
    """The operator's per-request budget (--max-request-tokens): refuse what would hold the decoder too long."""
    if budget and prompt_tokens + max_new_tokens > budget:
        raise bad_request(
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_new_tokens}) exceeds this server's "
            f"per-request budget of {budget} tokens: shorten the prompt or lower max_tokens",
            param="max_tokens",
            code="request_too_large",
        )


def checkpoint_health(learning) -> dict | None:
    """What /health says of the draft-state snapshots: None when nothing is saved."""
    if learning is None or not learning.state_dir:
        return None
    return {
        "state_dir": learning.state_dir,
        "written": learning.checkpoints,
        "failed": learning.checkpoint_failures,
        "last_good_round": learning.last_good_round,
        "last_error": learning.last_checkpoint_error,
    }


def wants_learning(request: Request) -> bool:
    value = request.headers.get(NO_LEARN_HEADER)
    if value is None:
        return True
    if value.strip().lower() in TRUE_VALUES:
        return False
    if value.strip().lower() in FALSE_VALUES:
        return True
    raise bad_request(f"header {NO_LEARN_HEADER} must be 1/true or 0/false, got '{value}'", param=NO_LEARN_HEADER)


def generation_config(req: CompletionRequest, max_new_tokens: int, k: int | None) -> GenerationConfig:
    try:
        sampling = SamplingConfig(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
        return GenerationConfig(max_new_tokens=max_new_tokens, k=k, sampling=sampling, seed=req.seed, stop=req.stop)
    except UserError as exc:
        raise bad_request(str(exc)) from None


async def wait_done(job: Job, request: Request) -> Done:
    """Non-streaming: wait for the worker's verdict; a client that went away cancels its job."""
    try:
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), timeout=DISCONNECT_POLL_S)
            except TimeoutError:
                if await request.is_disconnected():
                    job.cancel()
                    raise ApiError(499, "the client closed the request", code="cancelled") from None
                continue
            if isinstance(event, Done):
                return event
            if isinstance(event, Failed):
                raise event.error
    finally:
        job.cancel()  # a no-op once the job is done; frees the slot if this handler was cancelled


async def stream_events(job: Job, req: CompletionRequest, shape: ResponseShape):
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]` (or an error event)."""
    try:
        if req.kind == "chat":
            yield sse(shape.chunk(role=True))
        while True:
            event = await job.events.get()
            if isinstance(event, Delta):
                yield sse(shape.chunk(event.text))
            elif isinstance(event, Done):
                if event.tail:
                    yield sse(shape.chunk(event.tail))
                for chunk in shape.final_chunks(event.result, event.speculative, req.include_usage):
                    yield sse(chunk)
                yield DONE_EVENT
                return
            else:
                yield sse(event.error.body())
                return
    finally:
        job.cancel()  # the client disconnected mid-stream (or we are done): free the decoder


class CountResponses:
    """Pure ASGI middleware counting responses by route and status code (safe with streaming bodies)."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in ROUTES else "other"

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count_http(path, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
