"""Fuzzing the real server, bounded in examples and time.

schemathesis drives every operation of shimmy's own /openapi.json (no 5xx,
responses match the documented schemas and statuses, also from a local page),
and sends each one from a foreign web page and under a rebound Host name, which
must get 403 forbidden whatever the case; hypothesis throws JSON bodies,
WebSocket frames and Origin/Host header values at the generate endpoints. The
server generates at most 4 tokens a request here, so thousands of cases stay
cheap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import string

import httpx
import pytest
import schemathesis
import websockets
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from shimmy.api.error_shapes import ANTHROPIC_ERROR_TYPES, speaks_anthropic
from shimmy.errors import ERROR_KINDS
from tests.e2e.harness import isolated_env, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    env = isolated_env(root, SHIMMY_MAX_TOKENS_LIMIT="4", SHIMMY_MAX_QUEUE="64")
    srv = start_server(["--ctx-size", "512", "--request-timeout", "30"], env, cwd=root)
    yield srv
    alive = srv.process.poll() is None
    srv.stop()
    assert alive, "the server died during fuzzing"


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


# What a browser may send as Origin, from pages and apps on this machine (no
# Origin at all: curl, SDKs) and from anywhere else.
LOCAL_ORIGINS = [
    "http://localhost:3000",
    "https://localhost",
    "http://dev.localhost:5173",
    "http://127.0.0.1:8080",
    "http://[::1]:8080",
    "app://x",
    "file://",
    "tauri://localhost",
    "vscode-webview://abc",
]
FOREIGN_ORIGINS = [
    "https://evil.example",
    "null",
    "http://evil.example:3000",
    "http://localhost.evil.example",
    "http://127.0.0.1.evil.example",
    "chrome-extension://abcdef",
]
# Host names a DNS-rebinding page makes the browser send to 127.0.0.1.
ODD_HOSTS = [
    "evil.example",
    "evil.example:11434",
    "localhost.evil.example:8080",
    "127.0.0.1.nip.io",
    "attacker.com:80",
]


def assert_forbidden(response, path: str) -> None:
    """shimmy's 403 for a foreign page or a rebound Host: never a 2xx, never a 5xx
    (in Anthropic's envelope on its paths)."""
    assert response.status_code == 403, response.text
    if speaks_anthropic(path):
        assert response.json()["error"]["type"] == "permission_error"
    else:
        assert response.json()["error"]["code"] == "forbidden"


@schema.parametrize()
@schema.given(origin=st.sampled_from([None, *LOCAL_ORIGINS]))
@FUZZ
def test_every_operation_holds_its_contract(case, origin):
    headers = {"Origin": origin} if origin else {}
    response = case.call(headers=headers, timeout=60)
    # A schema-valid prompt can still be longer than the model's context: that is
    # a documented 400, which no JSON schema can express, so that one check is off.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    if response.status_code >= 400 and speaks_anthropic(case.path):
        assert response.json()["error"]["type"] in ANTHROPIC_ERROR_TYPES
    elif response.status_code >= 400:
        assert response.json()["error"]["code"] in ERROR_KINDS
    if origin:  # a local page may read what it asked for
        assert response.headers.get("access-control-allow-origin") == [origin]


@schema.parametrize()
@schema.given(origin=st.sampled_from(FOREIGN_ORIGINS))
@FUZZ
def test_every_operation_refuses_a_foreign_origin(case, origin):
    response = case.call(headers={"Origin": origin}, timeout=60)
    assert_forbidden(response, case.path)
    assert "access-control-allow-origin" not in response.headers


@schema.parametrize()
@schema.given(host=st.sampled_from(ODD_HOSTS))
@FUZZ
def test_every_operation_refuses_a_rebound_host(case, host):
    assert_forbidden(case.call(headers={"Host": host}, timeout=60), case.path)


def assert_documented_outcome(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 200:
        assert "choices" in body
    else:
        error = body["error"]
        assert error["code"] in ERROR_KINDS and error["message"]
        assert set(error) == {"code", "message", "details", "type"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
generate_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, "default", "", "nope"]) | json_values,
        "prompt": st.text(max_size=200) | json_values,
        "max_tokens": st.integers(-5, 10_000) | json_values,
        "temperature": st.floats(-1, 3, allow_nan=False) | json_values,
        "stream": st.booleans() | json_values,
        "stop": st.lists(st.text(max_size=5), max_size=3) | json_values,
        "seed": st.integers() | json_values,
    },
)


@given(body=generate_bodies | json_values)
@FUZZ
def test_generate_survives_arbitrary_json(server, body):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/api/generate", content=json.dumps(body))
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            events = [line for line in response.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "data: [DONE]"
        else:
            assert_documented_outcome(response)


@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@FUZZ
def test_generate_survives_arbitrary_bytes(server, raw):
    response = httpx.post(server.url + "/api/generate", content=raw, timeout=60)
    assert_documented_outcome(response)


ws_frames = st.text(max_size=100) | st.binary(max_size=100) | generate_bodies.map(json.dumps)


@given(frames=st.lists(ws_frames, min_size=1, max_size=4))
@FUZZ
def test_websocket_survives_arbitrary_frames(server, frames):
    async def run() -> None:
        async with websockets.connect(server.ws_url + "/ws/generate", open_timeout=10) as ws:
            for frame in frames:
                await ws.send(frame)
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if "error" in message:
                        assert message["error"]["code"] in ERROR_KINDS
                        break
                    if "done" in message:
                        break
                    assert set(message) == {"token"}

    asyncio.run(run())
    assert httpx.get(server.url + "/api/health").json()["status"] == "healthy"


# -- Origin and Host header values ---------------------------------------------

LOCAL_APP_SCHEMES = ("app", "file", "tauri", "vscode-webview")
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
# Header text as httpx and h11 send it: no ASCII control character but a tab
# inside; anything else of unicode (C1 controls included), sent as UTF-8.
header_text = (
    st.text(
        st.characters(
            blacklist_categories=["Cs"],
            blacklist_characters=[chr(c) for c in range(32) if c != 9] + ["\x7f"],
        ),
        min_size=1,
        max_size=3000,
    )
    .map(lambda text: text.strip(" \t"))
    .filter(bool)
)
# Text that can be no part of a URL's scheme, port or host boundary.
plain_text = header_text.filter(lambda text: not any(c in text for c in ":/?#@[]\\%"))
# Very long, but both headers together stay under the server's 64 KiB header limit.
long_text = plain_text.map(lambda text: (text * 4000)[:4000])
label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20)
port = st.integers(1, 65535).map(lambda n: f":{n}") | st.just("")

local_origins = st.one_of(
    st.sampled_from(LOCAL_ORIGINS),
    st.builds(
        "{}://{}{}".format,
        st.sampled_from(["http", "https"]),
        st.sampled_from(["localhost", "127.0.0.1", "127.8.9.10", "[::1]", "0.0.0.0"])
        | label.map("{}.localhost".format),
        port,
    ),
    st.builds("{}://{}".format, st.sampled_from(LOCAL_APP_SCHEMES), label),
)
foreign_origins = st.one_of(
    st.sampled_from(FOREIGN_ORIGINS),
    st.builds("https://{}.evil.example{}".format, label, port),
    st.builds("http://{}.example{}".format, plain_text, port),
    plain_text | long_text,  # not a URL at all
)


def is_local_host(host: str) -> bool:
    """The rule a Host must meet (issue 12), for the generated names below."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]").lower()
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name in ("localhost", socket.gethostname().lower()) or name.endswith(LOCAL_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_unspecified


local_hosts = st.one_of(
    st.sampled_from(["localhost", "127.0.0.1", "[::1]", "10.1.2.3", "192.168.0.7"]).flatmap(
        lambda host: port.map(lambda p: host + p)
    ),
    st.builds("{}{}{}".format, label, st.sampled_from(LOCAL_SUFFIXES), port),
)
odd_hosts = st.one_of(
    st.sampled_from(ODD_HOSTS),
    st.builds("{}.evil.example{}".format, label, port),
    st.builds("{}.example{}".format, plain_text, port),
    (plain_text | long_text).filter(lambda text: not is_local_host(text)),
)


@given(
    origin=st.none()
    | local_origins.map(lambda o: (o, True))
    | foreign_origins.map(lambda o: (o, False)),
    host=local_hosts.map(lambda h: (h, True)) | odd_hosts.map(lambda h: (h, False)),
)
@FUZZ
def test_origin_and_host_headers_decide_exactly_who_is_refused(server, origin, host):
    headers = {"Host": host[0].encode()}
    if origin is not None:
        headers["Origin"] = origin[0].encode()
    allowed = (origin is None or origin[1]) and host[1]
    note(f"allowed: {allowed}")
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 1}
    response = httpx.post(server.url + "/api/generate", json=body, headers=headers, timeout=60)
    assert response.status_code < 500, response.text
    if allowed:
        assert response.status_code == 200, response.text
    else:
        assert_forbidden(response, "/api/generate")
    assert httpx.get(server.url + "/api/health", timeout=10).json()["status"] == "healthy"
