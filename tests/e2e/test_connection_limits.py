"""What one connection may send the real `shimmy serve`: headers bounded in size,
count and time; WebSocket frames bounded like bodies, parse errors answered in
place, idle sockets closed; stop lists bounded on every API (issue 12)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
import websockets
import websockets.exceptions as websockets_exceptions

from tests.e2e.harness import isolated_env, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
BODY_LIMIT = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    env = isolated_env(
        root,
        SHIMMY_MAX_BODY_BYTES=str(BODY_LIMIT),
        SHIMMY_WS_IDLE_TIMEOUT="2",
        SHIMMY_HEADER_TIMEOUT="1",
    )
    srv = start_server(["--ctx-size", "512"], env, cwd=root)
    yield srv
    alive = srv.process.poll() is None
    srv.stop()
    assert alive


def address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def read_all(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    sock.settimeout(within)
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def assert_still_serving(server) -> None:
    assert httpx.get(server.url + "/api/health").json()["status"] == "healthy"


# -- headers -------------------------------------------------------------------------


def test_headers_over_the_size_limit_are_431(server):
    r = httpx.get(server.url + "/api/models", headers={"X-Big": "a" * 70_000})
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "request_too_large"
    assert_still_serving(server)


def test_too_many_headers_are_431(server):
    headers = {f"X-H{i}": "1" for i in range(150)}
    r = httpx.get(server.url + "/api/models", headers=headers)
    assert r.status_code == 431
    assert_still_serving(server)


def test_an_endless_request_line_is_431_not_memory(server):
    with socket.create_connection(address(server)) as sock:
        sock.sendall(b"GET /" + b"a" * 100_000)
        answer = read_all(sock, 10)
    assert answer.startswith(b"HTTP/1.1 431")


def test_headers_that_never_end_are_408_within_the_header_timeout(server):
    with socket.create_connection(address(server)) as sock:
        sock.sendall(b"GET /api/models HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        started = time.monotonic()
        answer = read_all(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert time.monotonic() - started < 5


def test_a_connection_that_says_nothing_is_closed(server):
    with socket.create_connection(address(server)) as sock:
        started = time.monotonic()
        answer = read_all(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 5


def test_a_slow_stream_is_not_cut_by_the_header_timeout(server):
    # The deadline covers the headers only: a reply read for longer than it is fine,
    # and so is the next request on the same connection.
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 8, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(2):
            with client.stream("POST", "/api/generate", json=body) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data: ")
                time.sleep(1.5)  # the passing of time is the point: past the 1 s deadline
                rest = [line for line in lines if line]
            assert rest[-1] == "data: [DONE]"


# -- WebSocket ---------------------------------------------------------------------------


def test_a_websocket_frame_over_the_body_limit_closes_the_socket(server):
    async def run() -> int | None:
        async with websockets.connect(server.ws_url + "/ws/generate", max_size=None) as ws:
            await ws.send(json.dumps({"prompt": "x" * (BODY_LIMIT + 10), "max_tokens": 1}))
            with pytest.raises(websockets_exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code

    assert asyncio.run(run()) == 1009  # "message too big"
    assert_still_serving(server)


def test_deeply_nested_json_in_a_frame_is_an_error_frame_and_the_socket_lives(server):
    async def run() -> tuple[dict, dict]:
        async with websockets.connect(server.ws_url + "/ws/generate") as ws:
            await ws.send("[" * 40_000 + "]" * 40_000)
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(json.dumps({"prompt": "Hi", "max_tokens": 2}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if "done" in message or "error" in message:
                    return error, message

    error, after = asyncio.run(run())
    assert error["error"]["code"] == "invalid_request"
    assert "nested too deeply" in error["error"]["details"]
    assert after["done"] is True
    log = server.log()
    assert "RecursionError" not in log and "Traceback" not in log


def test_an_idle_websocket_is_closed(server):
    async def run() -> float:
        async with websockets.connect(server.ws_url + "/ws/generate") as ws:
            started = time.monotonic()
            with pytest.raises(websockets_exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 15)
            assert ws.close_code == 1000
            return time.monotonic() - started

    waited = asyncio.run(run())
    assert 1.5 < waited < 10


def test_a_websocket_in_use_is_not_idle(server):
    async def run() -> list[bool]:
        done = []
        async with websockets.connect(server.ws_url + "/ws/generate") as ws:
            for _ in range(3):  # 3 requests 1 s apart: 3 s in all, over the 2 s limit
                await ws.send(json.dumps({"prompt": "Hi", "max_tokens": 1}))
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if "done" in message:
                        done.append(True)
                        break
                await asyncio.sleep(1)  # not synchronisation: the gaps between requests
        return done

    assert asyncio.run(run()) == [True, True, True]


# -- stop lists ------------------------------------------------------------------------

TOO_MANY = [f"stop{i}" for i in range(17)]
TOO_LONG = ["s" * 501]


@pytest.mark.parametrize("stop", [TOO_MANY, TOO_LONG, "s" * 501])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"model": MODEL, "prompt": "Hi", "max_tokens": 1}),
        ("/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 1}),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
        ),
    ],
)
def test_stop_lists_are_bounded_on_every_api(server, path, body, stop):
    r = httpx.post(server.url + path, json={**body, "stop": stop}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert "at most 16 stop sequences" in r.text or "at most 500 characters" in r.text


def test_stop_lists_are_bounded_on_the_websocket(server):
    async def run() -> dict:
        async with websockets.connect(server.ws_url + "/ws/generate") as ws:
            await ws.send(json.dumps({"prompt": "Hi", "max_tokens": 1, "stop": TOO_MANY}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    error = asyncio.run(run())["error"]
    assert error["code"] == "invalid_request" and "at most 16 stop sequences" in error["details"]


def test_sixteen_short_stops_are_fine(server):
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2, "stop": [f"zz{i}" for i in range(16)]}
    assert httpx.post(server.url + "/api/generate", json=body, timeout=60).status_code == 200
