"""Bounds on what a connection may send before its request reaches the app.

uvicorn's httptools protocol (the fast one shimmy runs, bench/RESULTS.md) sets
no limit on the request line and headers and no deadline for them: a client
could send headers forever, a megabyte at a time, or open connections and say
nothing. This protocol refuses headers over ``MAX_HEADER_BYTES`` or
``MAX_HEADERS`` with 431, and closes a connection whose request line and
headers have not arrived within ``HEADER_TIMEOUT`` seconds (408). Bodies are
bounded by the app (``BodySizeLimit``), WebSocket frames by ``ws_max_size``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shimmy.errors import ShimmyError

MAX_HEADER_BYTES = 64 * 1024  # request line and headers together (nginx: 32 KiB by default)
MAX_HEADERS = 100
# Seconds from a connection's opening (or the start of its next request) to the
# end of the headers; Settings.header_timeout.
HEADER_TIMEOUT = 10.0

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_TOO_LARGE = f"at most {MAX_HEADERS} headers and {MAX_HEADER_BYTES} bytes with the request line"


class _HeadersTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size, count and time limits."""

    header_timeout = HEADER_TIMEOUT

    @classmethod
    def with_timeout(cls, seconds: float) -> type[BoundedHttpToolsProtocol]:
        """This protocol with another header deadline (uvicorn takes a class)."""
        if seconds == cls.header_timeout:
            return cls
        return type(cls.__name__, (cls,), {"header_timeout": seconds})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: int | None = None
        self._header_timer: asyncio.TimerHandle | None = None

    # -- the header deadline -------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self._send_refusal(
                408,
                "The request headers took too long",
                f"the request line and headers must arrive within {self.header_timeout:g} s",
            )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    # -- the header size ------------------------------------------------------

    def _count(self, size: int, headers: int = 0) -> None:
        self._header_bytes += size
        self._header_count += headers
        if self._header_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS:
            self._refusal = 431
            raise _HeadersTooLarge  # httptools stops parsing; uvicorn answers 400 (below)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), headers=1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's keep-alive timeout closes an idle connection from here on.
        self._disarm_header_timer()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._send_refusal(self._refusal, "The request headers are too large", _TOO_LARGE)
            return
        super().send_400_response(msg)

    def _send_refusal(self, status: int, message: str, details: str) -> None:
        error = ShimmyError("request_too_large", message, details, status=status)
        body = json.dumps(error.to_dict()).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
            + b"content-type: application/json\r\n"
            + b"content-length: %d\r\n" % len(body)
            + b"connection: close\r\n\r\n"
            + body
        )
        self.transport.close()
