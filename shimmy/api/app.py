"""The FastAPI applications, built around one shared ModelManager: the main
listener's (every dialect) and the Ollama listener's (``--ollama``), behind the
same guards and reporting into the same /metrics and request log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shimmy import __version__
from shimmy.api.browser import BrowserCors, BrowserGuard, OriginPolicy
from shimmy.api.dialects import DIALECTS, OLLAMA_LISTENER_DIALECTS
from shimmy.api.dialects.ollama.errors import OLLAMA_OPEN_PATHS, ollama_error_body
from shimmy.api.error_shapes import ErrorBody, shimmy_error_body
from shimmy.api.errors import document_errors, install_error_handlers
from shimmy.api.metrics import Metrics, MetricsMiddleware
from shimmy.api.requestlog import (
    LISTENER_API,
    LISTENER_OLLAMA,
    RequestLog,
    RequestLogMiddleware,
)
from shimmy.api.security import OPEN_PATHS, ApiKeyAuth
from shimmy.errors import ShimmyError
from shimmy.models.manager import ModelManager


class BodySizeLimit:
    """Rejects request bodies over ``limit`` bytes with 413 before they are read whole,
    whether or not the client sent Content-Length."""

    def __init__(
        self, app: ASGIApp, limit: int, *, error_body: ErrorBody = shimmy_error_body
    ) -> None:
        self.app = app
        self.limit = limit
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        error = ShimmyError(
            "request_too_large",
            "Request body is too large",
            f"The limit is {self.limit} bytes",
        )
        status, shape = self.error_body(scope, error)
        body = json.dumps(shape).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class Observers:
    """What every listener of one process reports into: one set of /metrics
    counters and one request log (the dashboard's Server tab)."""

    metrics: Metrics
    request_log: RequestLog

    @classmethod
    def of(cls, manager: ModelManager, request_log: RequestLog | None = None) -> Observers:
        return cls(Metrics(manager), RequestLog() if request_log is None else request_log)


def create_app(
    manager: ModelManager, *, preload: bool = False, observers: Observers | None = None
) -> FastAPI:
    """The whole HTTP/WebSocket API over ``manager``; ``preload`` loads the default
    model in the background at start-up, so the first request does not wait."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if preload:
            manager.preload_default()
        yield

    app = FastAPI(
        title="shimmy",
        version=__version__,
        description="Local LLM server for GGUF models",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    document_errors(app)
    for build_router in DIALECTS:
        app.include_router(build_router(manager))
    return _guarded(app, manager, observers or Observers.of(manager), LISTENER_API)


def create_ollama_app(manager: ModelManager, *, observers: Observers | None = None) -> FastAPI:
    """Ollama's API (and the /v1 APIs, which Ollama serves on its port too) over
    ``manager``, for the second listener (``--ollama``): the same guards, limits,
    /metrics and request log as the main one, errors in Ollama's shape."""
    app = FastAPI(
        title="shimmy (Ollama API)",
        version=__version__,
        description="Ollama's API, served by shimmy",
    )
    install_error_handlers(app, ollama_error_body)
    for build_router in OLLAMA_LISTENER_DIALECTS:
        app.include_router(build_router(manager))
    return _guarded(
        app,
        manager,
        observers or Observers.of(manager),
        LISTENER_OLLAMA,
        error_body=ollama_error_body,
        open_paths=OLLAMA_OPEN_PATHS,
    )


def _guarded(
    app: FastAPI,
    manager: ModelManager,
    observers: Observers,
    listener: str,
    *,
    error_body: ErrorBody = shimmy_error_body,
    open_paths: frozenset[str] = OPEN_PATHS,
) -> FastAPI:
    """``app`` behind every listener's middleware: the body size limit, API keys,
    /metrics, CORS for allowed local pages, the browser guard and the request log."""
    settings = manager.settings
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes, error_body=error_body)
    if settings.api_keys:
        app.add_middleware(
            ApiKeyAuth, keys=settings.api_keys, open_paths=open_paths, error_body=error_body
        )
    metrics = observers.metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics, listener=listener)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    # Outside auth: browsers send CORS preflights without credentials.
    policy = OriginPolicy(settings.cors_origins)
    app.add_middleware(BrowserCors, policy=policy)
    # Before CORS and everything else: a foreign page's request never runs.
    app.add_middleware(BrowserGuard, policy=policy, error_body=error_body)
    # Outermost, so that requests the guards reject are logged too.
    app.state.request_log = observers.request_log
    app.add_middleware(RequestLogMiddleware, request_log=observers.request_log, listener=listener)
    app.state.manager = manager
    return app
