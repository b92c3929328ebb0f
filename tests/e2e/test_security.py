"""Auth, bind refusal, CORS, limits, cancellation and shutdown of the real `shimmy serve`."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import threading
import time

import httpx
import pytest
import websockets
import websockets.exceptions as websockets_exceptions

from tests.e2e.harness import isolated_env, run_shimmy, sse_data, start_server
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
KEYS = ("key-one", "key-two")
ENV_KEY = "key-from-env"
FILE_KEY = "key-from-file"

# Every route a client can reach, with a body that would succeed when authorised.
ROUTES = [
    ("GET", "/api/models", None),
    ("POST", "/api/generate", {"model": MODEL, "prompt": "Hi", "max_tokens": 1}),
    ("GET", "/v1/models", None),
    ("GET", f"/v1/models/{MODEL}", None),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
    ),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "Hi", "max_tokens": 1}),
    ("POST", "/v1/embeddings", {"model": MODEL, "input": "Hi"}),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
]


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    root = tmp_path_factory.mktemp("locked")
    key_file = root / "keys.txt"
    key_file.write_text(f"# shimmy keys\n\n{FILE_KEY}\n")
    env = isolated_env(root, SHIMMY_API_KEY=ENV_KEY)
    args = ["--api-key", KEYS[0], "--api-key", KEYS[1], "--api-key-file", str(key_file)]
    server = start_server([*args, "--ctx-size", "512"], env, cwd=root)
    yield server
    server.stop()


def call(server, method, path, body, headers=None) -> httpx.Response:
    return httpx.request(method, server.url + path, json=body, headers=headers or {}, timeout=60)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_a_key(locked, method, path, body):
    missing = call(locked, method, path, body)
    assert missing.status_code == 401, missing.text
    assert missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = call(locked, method, path, body, {"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    for headers in (
        {"Authorization": f"Bearer {KEYS[0]}"},
        {"x-api-key": KEYS[1]},
        {"Authorization": f"Bearer {ENV_KEY}"},
        {"x-api-key": FILE_KEY},
    ):
        ok = call(locked, method, path, body, headers)
        assert ok.status_code == 200, (headers, ok.text)


def test_health_stays_open(locked):
    assert call(locked, "GET", "/api/health", None).json()["status"] == "healthy"


def test_unknown_routes_do_not_leak_without_a_key(locked):
    assert call(locked, "GET", "/nothing-here", None).status_code == 401


def cached_tokens(server, key: str, path: str, body: dict) -> tuple[int, int]:
    r = call(server, "POST", path, body, {"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    return usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


@pytest.mark.parametrize(
    ("path", "field"), [("/v1/chat/completions", "messages"), ("/v1/completions", "prompt")]
)
def test_one_keys_cached_prompts_never_serve_another_key(locked, path, field):
    """With several keys, cached_tokens tells a client nothing of another key's prompts."""
    text = f"Remember this secret plan for {path}: meet at the old mill at nine, bring rope."
    content = [{"role": "user", "content": text}] if field == "messages" else text
    body = {"model": MODEL, field: content, "max_tokens": 1, "temperature": 0}
    prompt, first = cached_tokens(locked, KEYS[0], path, body)
    assert first == 0
    # The same prompt under another key: nothing reused, whichever slot it gets.
    assert cached_tokens(locked, KEYS[1], path, body) == (prompt, 0)
    assert cached_tokens(locked, FILE_KEY, path, body) == (prompt, 0)
    # Under the first key again, the cached prompt is reused as before.
    assert cached_tokens(locked, KEYS[0], path, body) == (prompt, prompt - 1)


def test_a_websocket_generation_is_cached_under_its_key(locked):
    """A prompt read over the WebSocket is cached in its key's scope: the same key's
    /v1 request reuses it, another key's does not."""
    text = "A WebSocket remembers: the boat leaves at dawn from the northern pier."
    frame = {"model": MODEL, "prompt": text, "raw": True, "max_tokens": 1, "temperature": 0}
    done = ws_first_message(locked.ws_url, {"Authorization": f"Bearer {KEYS[1]}"}, frame=frame)
    assert done.get("done") is True, done
    body = {"model": MODEL, "prompt": text, "max_tokens": 1, "temperature": 0}
    prompt, first = cached_tokens(locked, KEYS[0], "/v1/completions", body)
    assert first == 0
    assert cached_tokens(locked, KEYS[0], "/v1/completions", body) == (prompt, prompt - 1)
    # The WebSocket's own key finds what its generation left, though another key's
    # request came in between.
    assert cached_tokens(locked, KEYS[1], "/v1/completions", body)[1] == prompt - 1


def ws_first_message(
    url: str, headers: dict[str, str] | None = None, query: str = "", frame: dict | None = None
) -> dict:
    async def run() -> dict:
        async with websockets.connect(
            url + "/ws/generate" + query, additional_headers=headers or {}, open_timeout=10
        ) as ws:
            await ws.send(json.dumps(frame or {"prompt": "Hi", "max_tokens": 2}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if "done" in message or "error" in message:
                    return message

    return asyncio.run(run())


def test_websocket_needs_a_key(locked):
    with pytest.raises(websockets_exceptions.InvalidStatus) as refused:
        ws_first_message(locked.ws_url)
    assert refused.value.response.status_code == 401
    with pytest.raises(websockets_exceptions.InvalidStatus):
        ws_first_message(locked.ws_url, query="?api_key=wrong")
    assert ws_first_message(locked.ws_url, query=f"?api_key={KEYS[0]}")["done"] is True
    assert ws_first_message(locked.ws_url, {"x-api-key": FILE_KEY})["done"] is True
    assert ws_first_message(locked.ws_url, {"Authorization": f"Bearer {ENV_KEY}"})["done"] is True


# -- binding ---------------------------------------------------------------------


def test_non_loopback_bind_without_a_key_is_refused(tmp_path):
    env = isolated_env(tmp_path)
    result = run_shimmy(["serve", "--bind", "0.0.0.0:0"], env, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "Refusing to listen on 0.0.0.0 without an API key" in line and "--insecure" in line


@pytest.mark.parametrize("extra", [["--insecure"], ["--api-key", "k"]])
def test_non_loopback_bind_is_allowed_with_a_key_or_insecure(tmp_path, extra):
    env = isolated_env(tmp_path)
    server = start_server(["--bind", "0.0.0.0:0", "--no-preload", *extra], env, cwd=tmp_path)
    try:
        assert "serving on http://0.0.0.0:" in server.log()
    finally:
        server.stop()


# -- CORS and limits -----------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    root = tmp_path_factory.mktemp("limited")
    env = isolated_env(root, SHIMMY_MAX_QUEUE="1", SHIMMY_MAX_WS_CONNECTIONS="2")
    args = [
        "--parallel", "1", "--ctx-size", "2048", "--request-timeout", "3",
        "--cors-origin", "http://app.example",
    ]  # fmt: skip
    server = start_server(args, env, cwd=root)
    yield server
    server.stop()


def preflight(server, origin: str) -> httpx.Response:
    return httpx.options(
        server.url + "/api/generate",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )


def test_cors_answers_local_pages_and_refuses_others_even_with_a_key(locked):
    local = httpx.get(locked.url + "/api/health", headers={"Origin": "http://localhost:3000"})
    assert local.headers["access-control-allow-origin"] == "http://localhost:3000"
    foreign = httpx.get(
        locked.url + "/api/models",
        headers={"Origin": "http://app.example", "x-api-key": KEYS[0]},
    )
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "forbidden"


def test_cors_allows_the_named_origins_and_refuses_others(limited):
    ok = preflight(limited, "http://app.example")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://app.example"
    other = preflight(limited, "http://evil.example")
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers
    simple = httpx.get(limited.url + "/api/health", headers={"Origin": "http://app.example"})
    assert simple.headers["access-control-allow-origin"] == "http://app.example"


def stream_until_tokens(url: str, body: dict, tokens: int, stop: threading.Event) -> None:
    """Hold a stream open, reading, until told to stop (or it ends)."""
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", url + "/api/generate", json={**body, "stream": True}) as r:
            for _ in r.iter_lines():
                if stop.is_set():
                    return


def test_full_queue_is_503_server_busy_with_retry_after(limited):
    long = {"model": MODEL, "prompt": "Write a long essay about rivers.", "max_tokens": 2000}
    stop = threading.Event()
    holders = [
        threading.Thread(target=stream_until_tokens, args=(limited.url, long, 0, stop))
        for _ in range(2)
    ]
    try:
        for t in holders:
            t.start()

        def one_running_one_waiting() -> bool:
            health = httpx.get(limited.url + "/api/health").json()
            return health["active_requests"] == 1 and health["queued_requests"] == 1

        eventually(one_running_one_waiting, 20, interval=0.05, what="one running, one queued")
        r = httpx.post(limited.url + "/api/generate", json={"model": MODEL, "prompt": "x"})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "server_busy"
        assert int(r.headers["retry-after"]) >= 1
    finally:
        stop.set()
        for t in holders:
            t.join(30)


def test_request_wall_clock_limit_ends_the_stream_with_an_error(limited):
    # A raw greedy count goes on well past the limit; a sampled essay may end first.
    body = {
        "model": MODEL,
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
        "raw": True,
        "temperature": 0,
        "max_tokens": 2000,
        "stream": True,
    }
    started = time.monotonic()
    with httpx.stream("POST", limited.url + "/api/generate", json=body, timeout=60) as r:
        events = sse_data(r.iter_lines())
    assert time.monotonic() - started < 15
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "generation_failed" and "3 s limit" in error["message"]


def test_websocket_connection_limit(limited):
    async def run() -> tuple[dict, int]:
        url = limited.ws_url + "/ws/generate"
        async with websockets.connect(url), websockets.connect(url):
            async with websockets.connect(url) as third:
                message = json.loads(await asyncio.wait_for(third.recv(), 10))
                with pytest.raises(websockets_exceptions.ConnectionClosed):
                    await asyncio.wait_for(third.recv(), 10)
                assert third.close_code is not None
                return message, third.close_code

    message, code = asyncio.run(run())
    assert message["error"]["code"] == "server_busy" and code == 1013


def test_disconnect_frees_the_slot_for_the_next_request_at_once(limited):
    """With one slot: drop a long stream; the next request starts at once.

    "Starts" is measured as the next request's time to first token after the drop,
    less the same request's time to first token on an idle server (the HTTP round
    trip and its one-token prompt), alternating the two and taking medians."""
    long = {"model": MODEL, "prompt": "Write a long essay.", "max_tokens": 2000, "stream": True}
    short = {"model": MODEL, "prompt": "Hi", "max_tokens": 1, "stream": True, "raw": True}

    def first_token_after(started: float) -> float:
        with httpx.stream("POST", limited.url + "/api/generate", json=short, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    return time.monotonic() - started
        raise AssertionError("no token")

    idle, after_drop = [], []
    for _ in range(5):
        idle.append(first_token_after(time.monotonic()))
        with httpx.Client(timeout=60) as first:
            with first.stream("POST", limited.url + "/api/generate", json=long) as r:
                lines = r.iter_lines()
                while not next(lines).startswith("data: "):
                    pass
        after_drop.append(first_token_after(time.monotonic()))
    # Without the cancel the next request would wait for 2000 tokens (> 20 s); on a
    # quiet machine the delay is under 0.1 s, and a loaded one (other processes
    # taking the two cores) adds up to about a second of noise to either side.
    delay = statistics.median(after_drop) - statistics.median(idle)
    assert delay < 1.5, (idle, after_drop)


# -- shutdown ----------------------------------------------------------------------


def test_sigterm_ends_streams_with_a_final_event_and_exits_0(tmp_path):
    env = isolated_env(tmp_path)
    server = start_server(["--ctx-size", "2048"], env, cwd=tmp_path)
    results: list[list[str]] = []

    def stream() -> None:
        body = {"model": MODEL, "prompt": "Write a long essay.", "max_tokens": 2000, "stream": True}
        with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as r:
            results.append(sse_data(r.iter_lines()))

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()
    eventually(
        lambda: httpx.get(server.url + "/api/health").json()["active_requests"] == 2,
        20,
        interval=0.05,
        what="both streams running",
    )
    server.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert server.process.wait(10) == 0
    assert time.monotonic() - signalled < 5
    for t in threads:
        t.join(10)
    assert len(results) == 2
    for events in results:
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] == "cancelled"
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/api/health", timeout=2)
