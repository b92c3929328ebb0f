"""The stream framings every dialect answers in, and the response that sends them.

Server-sent events (OpenAI, the native API, Anthropic) and newline-delimited
JSON (Ollama) are both a sequence of JSON documents; :class:`EventStream` sends
them as they come and stops, cancelling the generations behind them, when the
client leaves (through the request's :class:`~shimmy.api.core.watch.Watch`,
which has listened since the request was prepared, so a client that left while
its request was queued is noticed before any token exists).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from shimmy.api.core.watch import ClientGone, Watch
from shimmy.models.generation import Generation

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
# No caching, and no buffering by a reverse proxy (nginx honours X-Accel-Buffering).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_DONE = "data: [DONE]\n\n"


def compact_json(data: Any) -> str:
    """JSON as the APIs send it: no spaces, UTF-8 text left as it is."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def sse_event(data: Any, event: str | None = None) -> str:
    """One server-sent event carrying ``data`` as compact JSON (named ``event``, if
    given, as Anthropic names its events)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {compact_json(data)}\n\n"


def ndjson_line(data: Any) -> str:
    """One line of newline-delimited JSON."""
    return compact_json(data) + "\n"


class EventStream(Response):
    """A streamed answer that ends when its events do, or when its client leaves
    (then its generations are cancelled, queued or running)."""

    def __init__(
        self,
        events: AsyncIterator[str],
        *,
        watch: Watch,
        generations: Sequence[Generation],
        media_type: str = SSE_MEDIA_TYPE,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        self.events = events
        self.watch = watch
        self.generations = list(generations)
        self.status_code = status_code
        self.media_type = media_type
        self.background: BackgroundTask | None = None
        self.init_headers({**STREAM_HEADERS, **(headers or {})})
        watch.hand_over()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            await self.watch.send(_encoded(self.events), send, self.generations)
        except (ClientGone, OSError):
            pass  # nobody is there to read the rest; the generations are cancelled
        finally:
            self.watch.close()


async def _encoded(events: AsyncIterator[str]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield event.encode("utf-8")
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
