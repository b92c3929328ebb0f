"""Fuzzing the real server, bounded in examples and time.

schemathesis drives every operation of shimmy's own /openapi.json (no 5xx,
responses match the documented schemas and statuses); hypothesis throws JSON
bodies and WebSocket frames at the generate endpoints. The server generates at
most 4 tokens a request here, so thousands of cases stay cheap.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import schemathesis
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

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


@schema.parametrize()
@FUZZ
def test_every_operation_holds_its_contract(case):
    response = case.call(timeout=60)
    # A schema-valid prompt can still be longer than the model's context: that is
    # a documented 400, which no JSON schema can express, so that one check is off.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    if response.status_code >= 400:
        assert response.json()["error"]["code"] in ERROR_KINDS


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
