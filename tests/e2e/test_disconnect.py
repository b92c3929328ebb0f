"""A client that leaves while its request waits in the queue: the real `shimmy
serve` cancels the request before it ever takes a slot, whatever the answer's
form (plain JSON, SSE, WebSocket) and the dialect (issues 13 and 18).

One slot; a long generation holds it; the request under test queues behind it;
its client leaves; while the long generation still holds the slot, the request
must be gone from the queue and counted as cancelled."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets

from tests.e2e.harness import Server, isolated_env, start_server
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
# A raw greedy count goes on for its whole budget (minutes on this machine).
LONG = {
    "model": MODEL,
    "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
    "raw": True,
    "temperature": 0,
    "max_tokens": 4000,
    "stream": True,
}
PROMPT = {"model": MODEL, "prompt": "Name a colour.", "max_tokens": 8}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}]}
PROMPT_INPUT = {"model": MODEL, "input": "Name a colour.", "max_output_tokens": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("disconnect")
    srv = start_server(["--parallel", "1", "--ctx-size", "8192"], isolated_env(root), cwd=root)
    yield srv
    srv.stop()


def health(server: Server) -> dict[str, Any]:
    return httpx.get(server.url + "/api/health", timeout=30).json()


def cancelled_generations(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.findall(
        r'^shimmy_generations_total\{[^}]*reason="cancelled"[^}]*\} (\S+)$', text, re.M
    )
    return sum(float(value) for value in found)


@pytest.fixture
def slot_taken(server: Server) -> Iterator[threading.Event]:
    """A long generation holding the only slot; set the event to end it."""
    stop = threading.Event()
    streaming = threading.Event()

    def hold() -> None:
        with httpx.stream("POST", server.url + "/api/generate", json=LONG, timeout=600) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    streaming.set()
                if stop.is_set():
                    return

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert streaming.wait(60), "the long generation never started"
    yield stop
    stop.set()
    holder.join(60)
    eventually(lambda: health(server)["active_requests"] == 0, 30, what="the slot freed")


def http_request(server: Server, path: str, body: dict[str, Any]) -> Callable[[], None]:
    """Send a request by hand; returns how to hang up."""
    data = json.dumps(body).encode()
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock.close


def websocket_request(server: Server, body: dict[str, Any]) -> Callable[[], None]:
    """Open a WebSocket on its own event loop and send a request frame; returns how
    to hang up (closing the socket, as a closed browser tab does)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def connect() -> Any:
        ws = await websockets.connect(server.ws_url + "/ws/generate", open_timeout=30)
        await ws.send(json.dumps(body))
        return ws

    ws = asyncio.run_coroutine_threadsafe(connect(), loop).result(60)

    def hang_up() -> None:
        asyncio.run_coroutine_threadsafe(ws.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()

    return hang_up


REQUESTS = {
    "native JSON": lambda s: http_request(s, "/api/generate", PROMPT),
    "native SSE": lambda s: http_request(s, "/api/generate", {**PROMPT, "stream": True}),
    "openai JSON": lambda s: http_request(s, "/v1/chat/completions", CHAT),
    "openai SSE": lambda s: http_request(s, "/v1/chat/completions", {**CHAT, "stream": True}),
    "openai text SSE": lambda s: http_request(s, "/v1/completions", {**PROMPT, "stream": True}),
    "websocket": lambda s: websocket_request(s, PROMPT),
    "anthropic SSE": lambda s: http_request(
        s, "/v1/messages", {**CHAT, "max_tokens": 8, "stream": True}
    ),
    "responses JSON": lambda s: http_request(s, "/v1/responses", {**PROMPT_INPUT}),
    "responses SSE": lambda s: http_request(s, "/v1/responses", {**PROMPT_INPUT, "stream": True}),
}


@pytest.mark.parametrize("kind", list(REQUESTS))
def test_a_queued_request_whose_client_leaves_never_takes_a_slot(server, slot_taken, kind):
    before = cancelled_generations(server)
    hang_up = REQUESTS[kind](server)
    eventually(lambda: health(server)["queued_requests"] == 1, 30, what="the request queued")
    hang_up()
    # Gone from the line, and finished as cancelled, while the slot is still held.
    eventually(lambda: cancelled_generations(server) == before + 1, 10, what="the cancel")
    now = health(server)
    assert now["queued_requests"] == 0 and now["active_requests"] == 1, now
    assert not slot_taken.is_set()
