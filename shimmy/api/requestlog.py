"""A log of the API's recent requests, for the dashboard.

:class:`RequestLogMiddleware` opens a :class:`RequestRecord` for every HTTP
request and WebSocket connection and keeps it in a context variable; a route
that starts a generation calls :func:`attach_generation`, and the record then
reads its model, token counts and speeds from that :class:`Generation`. The
records live in a :class:`RequestLog` ring buffer that any thread may read.
Recording this way covers every router without each one counting tokens.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shimmy.models.generation import Generation

WEBSOCKET_OPEN = 101  # the status shown for a live WebSocket frame
# Which listener a request came in on: the main one, or Ollama's (--ollama).
LISTENER_API = "api"
LISTENER_OLLAMA = "ollama"


@dataclass
class RequestRecord:
    """One API request (or one WebSocket frame that generated); filled in as it runs."""

    id: int
    started_at: float  # wall-clock time.time()
    client: str
    method: str
    path: str
    status: int | None = None
    finished_at: float | None = None
    generation: Generation | None = None
    listener: str = LISTENER_API
    _monotonic_start: float = field(default_factory=time.monotonic, repr=False)

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    @property
    def endpoint(self) -> str:
        """ "POST /v1/chat/completions"; a request to Ollama's listener says so."""
        shown = f"{self.method} {self.path}"
        return shown if self.listener == LISTENER_API else f"{self.listener}: {shown}"

    @property
    def model(self) -> str | None:
        return self.generation.model if self.generation else None

    @property
    def prompt_tokens(self) -> int | None:
        return self.generation.prompt_tokens if self.generation else None

    @property
    def completion_tokens(self) -> int | None:
        return self.generation.completion_tokens if self.generation else None

    @property
    def time_to_first_token(self) -> float | None:
        return self.generation.time_to_first_token if self.generation else None

    @property
    def tokens_per_second(self) -> float | None:
        return self.generation.tokens_per_second if self.generation else None

    @property
    def duration(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)


class RequestLog:
    """The last ``capacity`` requests, oldest first; thread-safe."""

    def __init__(self, capacity: int = 500) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.version = 0  # bumped on every change, so readers can skip unchanged logs

    def open(
        self, client: str, method: str, path: str, listener: str = LISTENER_API
    ) -> RequestRecord:
        record = RequestRecord(
            next(self._ids), time.time(), client, method, path, listener=listener
        )
        with self._lock:
            self._records.append(record)
            self.version += 1
        return record

    def close(self, record: RequestRecord, status: int) -> None:
        with self._lock:
            record.status = status
            record.finished_at = time.time()
            self.version += 1

    def touch(self) -> None:
        with self._lock:
            self.version += 1

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


@dataclass
class _Current:
    """Mutable, so that a route running in a worker thread (a copied context) can
    move a WebSocket connection on to a new record."""

    log: RequestLog
    record: RequestRecord


_current: ContextVar[_Current | None] = ContextVar("shimmy_request_record", default=None)


def attach_generation(generation: Generation) -> None:
    """Tie ``generation`` to the request being served (a no-op outside one).

    A WebSocket connection may generate many times: each generation after the
    first gets its own record, so the log shows one line per reply.
    """
    current = _current.get()
    if current is None:
        return
    log, record = current.log, current.record
    if record.generation is not None and record.method == "WS":
        if not record.done:
            log.close(record, WEBSOCKET_OPEN)
        record = current.record = log.open(
            record.client, record.method, record.path, record.listener
        )
    record.generation = generation
    log.touch()


class RequestLogMiddleware:
    """Pure ASGI middleware recording every request into ``request_log``."""

    def __init__(self, app: ASGIApp, request_log: RequestLog, listener: str = LISTENER_API) -> None:
        self.app = app
        self.log = request_log
        self.listener = listener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        client_text = f"{client[0]}:{client[1]}" if client else "-"
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
        record = self.log.open(client_text, method, scope.get("path", ""), self.listener)
        current = _Current(self.log, record)
        token = _current.set(current)
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "websocket.accept":
                status = WEBSOCKET_OPEN
            elif message["type"] == "websocket.close":
                status = int(message.get("code", 1000))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            _current.reset(token)
            # A WebSocket may have moved on to a newer record; close that one too.
            if current.record is not record and not current.record.done:
                self.log.close(current.record, status)
            if not record.done:
                self.log.close(record, status)
