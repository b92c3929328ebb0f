"""Refusing a request before it reaches a route, for the pure ASGI guards
(API keys, browser origins, request size): one error body, for HTTP and
WebSocket handshakes alike, in the shape of the API the request was for
(``ErrorBody``: shimmy's own by default, Ollama's on its listener)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import Receive, Scope, Send

from shimmy.api.error_shapes import ErrorBody, shimmy_error_body
from shimmy.errors import ShimmyError

# A WebSocket that cannot be refused with an HTTP status is closed with this code
# ("policy violation") after one error frame.
WS_POLICY_VIOLATION = 1008


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    error: ShimmyError,
    headers: Sequence[tuple[bytes, bytes]] = (),
    error_body: ErrorBody = shimmy_error_body,
) -> None:
    """Answer ``error`` with the status and body ``error_body`` gives it (in the
    shape of the API the path belongs to), and nothing else."""
    status, shape = error_body(scope, error)
    body = json.dumps(shape).encode()
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": all_headers})
        await send({"type": "http.response.body", "body": body})
        return
    # WebSocket: refuse the handshake with the status where the server supports
    # denial responses (uvicorn does), else accept just long enough to say why.
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": all_headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": body.decode()})
    await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
