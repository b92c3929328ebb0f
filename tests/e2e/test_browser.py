"""The real `shimmy serve` against what a web page in the user's browser can send:
cross-site requests, DNS rebinding, cross-site WebSockets, and file paths in the
model field (issue 12). Each attack is sent as a page would send it, and the
test checks both that it is refused and that nothing ran."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import quote

import httpx
import pytest
import websockets
import websockets.exceptions as websockets_exceptions
from websockets.typing import Origin

from tests.e2e.harness import isolated_env, run_shimmy, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
APP_ORIGIN = "https://app.example"
GENERATE = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}

FOREIGN_ORIGINS = [
    "https://evil.example",
    "http://evil.example:11435",
    "null",
    "http://localhost.evil.example",
    "http://127.0.0.1.evil.example",
    "chrome-extension://abcdef",
    "http://[::2]",
    "not a url",
]
LOCAL_ORIGINS = [
    "http://localhost",
    "http://localhost:3000",
    "https://localhost:8443",
    "http://dev.localhost:5173",
    "http://127.0.0.1:8080",
    "http://[::1]:8080",
    "http://0.0.0.0:8000",
    "app://shimmy-client",
    "file://",
    "tauri://localhost",
    "vscode-webview://1a2b3c",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    env = isolated_env(root)
    srv = start_server(["--ctx-size", "512", "--cors-origin", APP_ORIGIN], env, cwd=root)
    yield srv
    srv.stop()


def requests_served(server) -> float:
    """How many requests got past the guards (shimmy_requests_total over every
    endpoint but /metrics itself, which this asks)."""
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("shimmy_requests_total{") and 'endpoint="/metrics"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def simple_post(server, path: str, body: dict, **headers: str) -> httpx.Response:
    """A "simple" cross-site POST: text/plain, so a browser sends it without a preflight."""
    return httpx.post(
        server.url + path,
        content=json.dumps(body),
        headers={"Content-Type": "text/plain", **headers},
        timeout=60,
    )


def assert_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert "access-control-allow-origin" not in response.headers


# -- Origin ------------------------------------------------------------------------


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
@pytest.mark.parametrize(
    ("path", "body"), [("/api/generate", GENERATE), ("/v1/chat/completions", CHAT)]
)
def test_a_foreign_page_cannot_run_a_generation(server, origin, path, body):
    before = requests_served(server)
    assert_forbidden(simple_post(server, path, body, Origin=origin))
    assert requests_served(server) == before  # refused before any route ran


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/models"), ("GET", "/v1/models"), ("GET", "/api/health"), ("GET", "/metrics"),
     ("GET", "/openapi.json"), ("GET", "/nothing-here"), ("OPTIONS", "/api/generate")],
)  # fmt: skip
def test_every_route_refuses_a_foreign_origin(server, origin, method, path):
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    assert_forbidden(httpx.request(method, server.url + path, headers=headers))


@pytest.mark.parametrize("origin", [*LOCAL_ORIGINS, APP_ORIGIN])
def test_local_pages_and_the_named_origin_work_and_may_read_the_answer(server, origin):
    r = simple_post(server, "/api/generate", GENERATE, Origin=origin)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1
    assert r.headers["access-control-allow-origin"] == origin
    preflight = httpx.options(
        server.url + "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin


def test_requests_without_an_origin_work_whatever_their_content_type(server):
    # curl -d sends application/x-www-form-urlencoded; scripts send anything.
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "application/json"):
        r = httpx.post(
            server.url + "/api/generate",
            content=json.dumps(GENERATE),
            headers={"Content-Type": content_type},
            timeout=60,
        )
        assert r.status_code == 200, (content_type, r.text)


# -- Host (DNS rebinding) -------------------------------------------------------------


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost.evil:{port}"],
)
def test_a_rebound_host_name_is_refused(server, host):
    before = requests_served(server)
    r = httpx.post(
        server.url + "/api/generate",
        json=GENERATE,
        headers={"Host": host.format(port=port_of(server))},
        timeout=60,
    )
    assert_forbidden(r)
    assert requests_served(server) == before


@pytest.mark.parametrize(
    "host",
    ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "app.localhost:{port}",
     "printer.local:{port}", "box.internal", "192.168.1.20:{port}", "10.0.0.5", "0.0.0.0:{port}",
     socket.gethostname()],
)  # fmt: skip
def test_local_host_names_are_served(server, host):
    r = httpx.get(server.url + "/api/models", headers={"Host": host.format(port=port_of(server))})
    assert r.status_code == 200, r.text


# -- WebSocket -----------------------------------------------------------------------


async def ws_generate(url: str, origin: str | None) -> dict:
    header = Origin(origin) if origin is not None else None
    async with websockets.connect(url + "/ws/generate", origin=header, open_timeout=10) as ws:
        await ws.send(json.dumps({"prompt": "Hi", "max_tokens": 2}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if "done" in message or "error" in message:
                return message


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
def test_a_foreign_page_cannot_open_a_websocket(server, origin):
    with pytest.raises(websockets_exceptions.InvalidStatus) as refused:
        asyncio.run(ws_generate(server.ws_url, origin))
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "vscode-webview://x", APP_ORIGIN, None]
)
def test_local_pages_and_clients_without_origin_open_websockets(server, origin):
    assert asyncio.run(ws_generate(server.ws_url, origin))["done"] is True


# -- model names, never paths --------------------------------------------------------


PATH_NAMES = [
    "/etc/passwd",
    "/etc/shadow",
    "../../../../etc/passwd",
    "~/.ssh/id_rsa",
    "/nonexistent/x.gguf",
    "/",
]


@pytest.mark.parametrize("name", PATH_NAMES)
def test_a_path_as_model_name_is_a_plain_404(server, name):
    answers = [
        httpx.post(server.url + "/api/generate", json={**GENERATE, "model": name}, timeout=60),
        httpx.post(server.url + "/v1/chat/completions", json={**CHAT, "model": name}, timeout=60),
        httpx.post(server.url + "/v1/completions", json={**GENERATE, "model": name}, timeout=60),
        httpx.post(server.url + "/v1/embeddings", json={"model": name, "input": "x"}, timeout=60),
        httpx.get(server.url + "/v1/models/" + quote(name, safe="")),
    ]
    for r in answers:
        assert r.status_code == 404, r.text
        error = r.json()["error"]
        assert error["code"] == "model_not_found"
        assert error["message"] == "The specified model was not found"
        assert "root" not in r.text and "GGUF" not in r.text and "starts with" not in r.text


def test_a_missing_and_an_existing_path_answer_alike(server, tmp_path):
    existing = tmp_path / "secret.txt"
    existing.write_text("root:x:0:0")
    missing = tmp_path / "missing.txt"

    def answer(name: str) -> dict:
        r = httpx.post(server.url + "/api/generate", json={**GENERATE, "model": name}, timeout=60)
        error = r.json()["error"]
        return {**error, "details": error["details"].replace(name, "NAME")}

    assert answer(str(existing)) == answer(str(missing))


def test_a_gguf_outside_every_model_folder_is_not_loaded(server, smollm2_path, tmp_path):
    outside = tmp_path / "elsewhere" / "stray-model.gguf"
    outside.parent.mkdir()
    outside.symlink_to(smollm2_path)
    for name in (str(outside), str(smollm2_path)):
        r = httpx.post(server.url + "/api/generate", json={**GENERATE, "model": name}, timeout=60)
        assert r.status_code == 404, r.text
        assert r.json()["error"]["details"] == f"Model '{name}' is not available"
    loaded = httpx.get(server.url + "/api/models").json()["models"]
    assert all("stray" not in m["id"] for m in loaded)


def test_the_operator_may_still_serve_a_file_by_path(tmp_path, smollm2_path):
    own = tmp_path / "mine" / "my-model.gguf"
    own.parent.mkdir()
    own.symlink_to(smollm2_path)
    env = isolated_env(tmp_path)
    srv = start_server(["--model", str(own), "--ctx-size", "512"], env, cwd=tmp_path)
    try:
        r = httpx.post(srv.url + "/api/generate", json={**GENERATE, "model": "default"}, timeout=60)
        assert r.status_code == 200, r.text
        by_path = httpx.post(srv.url + "/api/generate", json={**GENERATE, "model": str(own)})
        assert by_path.status_code == 404
    finally:
        srv.stop()


# -- keys, logs and CORS flags at start ---------------------------------------------------


def test_the_verbose_log_never_shows_a_key(tmp_path):
    key = "sekrit-key-123"
    env = isolated_env(tmp_path)
    srv = start_server(["--api-key", key, "-v", "--no-preload"], env, cwd=tmp_path)
    try:

        async def connect() -> None:
            url = f"{srv.ws_url}/ws/generate?api_key={key}&x=1"
            async with websockets.connect(url, open_timeout=10) as ws:
                await ws.close()

        asyncio.run(connect())
        httpx.get(srv.url + f"/api/models?api_key={key}", headers={"x-api-key": key})
    finally:
        srv.stop()
    log = srv.log()
    assert "WebSocket /ws/generate?api_key=[redacted]" in log  # the line is there...
    assert key not in log  # ...without the key


@pytest.mark.parametrize("key", ["", "  "])
def test_an_empty_api_key_is_refused_at_start(tmp_path, key):
    env = isolated_env(tmp_path)
    args = ["serve", "--bind", "127.0.0.1:0", "--api-key", key]
    result = run_shimmy(args, env, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "An API key must not be empty" in line


def test_an_empty_key_header_never_passes(tmp_path):
    env = isolated_env(tmp_path)
    srv = start_server(["--api-key", "k", "--no-preload"], env, cwd=tmp_path)
    try:
        for headers in ({"x-api-key": ""}, {"Authorization": "Bearer"}, {"Authorization": ""}):
            assert httpx.get(srv.url + "/api/models", headers=headers).status_code == 401
    finally:
        srv.stop()


@pytest.mark.parametrize("origin", ["*", "http://*"])
def test_cors_origin_star_is_refused(tmp_path, origin):
    env = isolated_env(tmp_path)
    result = run_shimmy(
        ["serve", "--bind", "127.0.0.1:0", "--cors-origin", origin], env, cwd=tmp_path, timeout=30
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "would let every web page use shimmy" in line
