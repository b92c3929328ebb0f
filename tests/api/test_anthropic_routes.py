"""Anthropic's Messages API over a fake manager: exact shapes and event
sequences, what reaches the manager, errors in Anthropic's envelope as its SDK
raises them, and cancellation when the client leaves.

The real model end to end, with the anthropic SDK, is tests/e2e/test_anthropic.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from fastapi import FastAPI

from shimmy.api.app import BodySizeLimit
from shimmy.api.dialects.anthropic.routes import build_router
from shimmy.api.dialects.openai.routes import build_router as build_openai_router
from shimmy.api.errors import install_error_handlers
from shimmy.api.security import ApiKeyAuth
from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation, GenerationRequest
from shimmy.models.tools import ToolChoice, ToolRequest
from tests.api.fake_manager import HERMES_REPLY, MODEL, FakeManager, asgi_post
from tests.sse import sse_events
from tests.waiting import eventually_async

WEATHER = {
    "name": "get_weather",
    "description": "Weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager()


@pytest.fixture
def app(manager) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router(manager))
    app.include_router(build_openai_router(manager))
    app.add_middleware(BodySizeLimit, limit=4096)
    app.add_middleware(ApiKeyAuth, keys=["sk-right"])
    return app


@pytest.fixture
def run() -> Iterator[Any]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def http(app, run):
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"x-api-key": "sk-right", "anthropic-version": "2023-06-01"},
    )
    yield lambda method, url, **kw: run(client.request(method, url, **kw))
    run(client.aclose())


@pytest.fixture
def sdk(app, run):
    client = anthropic.AsyncAnthropic(
        base_url="http://test",
        api_key="sk-right",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
    )
    yield SimpleNamespace(client=client, run=run)
    run(client.close())


def body(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hi"}],
        **extra,
    }


def events(http, **extra: Any) -> list[tuple[str | None, dict[str, Any]]]:
    response = http("POST", "/v1/messages", json=body(stream=True, **extra))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse_events(response.text)


# -- shapes ------------------------------------------------------------------------------


def test_a_message_has_anthropic_s_shape(http, manager):
    manager.cached_tokens = 1
    response = http("POST", "/v1/messages", json=body())
    assert response.status_code == 200
    message = response.json()
    assert message["id"].startswith("msg_")
    assert message == {
        "id": message["id"],
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello, world"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 3,  # the 4 prompt tokens less the one read from the cache
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1,
            "output_tokens": 3,
        },
    }


def test_the_stream_is_anthropic_s_event_sequence(http, manager):
    manager.cached_tokens = 2
    got = events(http)
    assert [name for name, _ in got] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in got)
    start = got[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 2 and start["usage"]["cache_read_input_tokens"] == 2
    assert got[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert [data["delta"] for _, data in got[3:6]] == [
        {"type": "text_delta", "text": "Hello"},
        {"type": "text_delta", "text": ","},
        {"type": "text_delta", "text": " world"},
    ]
    assert all(data["index"] == 0 for _, data in got[3:7])
    assert got[7][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 2,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 2,
            "output_tokens": 3,
        },
    }


def test_tool_use_streams_as_blocks_with_input_json_deltas(http, manager):
    manager.pieces = HERMES_REPLY
    got = events(http, tools=[WEATHER])
    names = [name for name, _ in got]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    starts = [data for name, data in got if name == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    for start in starts[1:]:
        block = start["content_block"]
        assert block["name"] == "get_weather" and block["input"] == {} and block["id"]
    # Each block's deltas come between its start and its stop, in order.
    for index in range(3):
        mine = [name for name, data in got if data.get("index") == index]
        assert mine[0] == "content_block_start" and mine[-1] == "content_block_stop"
        assert set(mine[1:-1]) == {"content_block_delta"}
    text = "".join(
        d["delta"]["text"] for n, d in got if n == "content_block_delta" and d["index"] == 0
    )
    assert text == "Checking."
    inputs = [
        "".join(
            d["delta"]["partial_json"]
            for n, d in got
            if n == "content_block_delta" and d["index"] == i
        )
        for i in (1, 2)
    ]
    assert [json.loads(i) for i in inputs] == [{"city": "Paris"}, {"city": "Rome"}]
    assert got[-2][1]["delta"]["stop_reason"] == "tool_use" and names[-1] == "message_stop"
    whole = http("POST", "/v1/messages", json=body(tools=[WEATHER])).json()
    assert [b["type"] for b in whole["content"]] == ["text", "tool_use", "tool_use"]
    assert whole["content"][0]["text"] == text
    assert [b["input"] for b in whole["content"][1:]] == [{"city": "Paris"}, {"city": "Rome"}]
    assert whole["stop_reason"] == "tool_use"


def test_the_sdk_s_stream_assembles_the_whole_message(sdk, manager):
    manager.pieces = HERMES_REPLY
    create = sdk.client.messages.create
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [WEATHER],
    }

    async def streamed() -> Any:
        async with sdk.client.messages.stream(**kwargs) as stream:
            return await stream.get_final_message()

    whole = sdk.run(create(**kwargs))
    final = sdk.run(streamed())
    assert [b.type for b in final.content] == [b.type for b in whole.content]
    assert final.content[0].text == whole.content[0].text == "Checking."
    assert [b.input for b in final.content[1:]] == [b.input for b in whole.content[1:]]
    assert final.stop_reason == whole.stop_reason == "tool_use"


def test_stop_reasons(http, manager):
    manager.stop_string = "END"
    got = http("POST", "/v1/messages", json=body(stop_sequences=["END", "STOP"])).json()
    assert (got["stop_reason"], got["stop_sequence"]) == ("stop_sequence", "END")
    stream = events(http, stop_sequences=["END"])
    assert stream[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    manager.stop_string = "<|im_end|>"  # the template's own end of turn
    got = http("POST", "/v1/messages", json=body(stop_sequences=["END"])).json()
    assert (got["stop_reason"], got["stop_sequence"]) == ("end_turn", None)
    manager.stop_string = None
    manager.reason = "length"
    assert http("POST", "/v1/messages", json=body()).json()["stop_reason"] == "max_tokens"


# -- what reaches the manager ----------------------------------------------------------


def test_a_conversation_reaches_the_template_in_chat_shape(http, manager):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "user", "content": "And quickly."},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Looking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "cold"}],
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "no",
                    "is_error": True,
                },
                {"type": "text", "text": "Thanks", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ]
    system = [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}]
    extra = {"system": system, "metadata": {"user_id": "u"}, "thinking": {"type": "enabled"}}
    response = http("POST", "/v1/messages", json=body(messages=messages, tools=[WEATHER], **extra))
    assert response.status_code == 200, response.text
    assert manager.calls[-1]["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": "Weather in Oslo?\nAnd quickly."},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "cold"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no"},
        {"role": "user", "content": "Thanks"},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, ToolChoice("auto")),
        ({"type": "auto"}, ToolChoice("auto")),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoice("auto", parallel=False)),
        ({"type": "any"}, ToolChoice("required")),
        (
            {"type": "tool", "name": "get_weather"},
            ToolChoice("named", "get_weather", parallel=False),  # that one call
        ),
        ({"type": "none"}, ToolChoice("none")),
    ],
)
def test_tool_choice_maps_onto_the_tool_request(http, manager, choice, expected):
    extra = {"tools": [WEATHER]} | ({"tool_choice": choice} if choice else {})
    assert http("POST", "/v1/messages", json=body(**extra)).status_code == 200
    request = manager.calls[-1]["tools"]
    assert isinstance(request, ToolRequest) and request.choice == expected
    assert request.tools[0].parameters == WEATHER["input_schema"]


def test_sampling_stops_and_limits_reach_the_manager(http, manager):
    extra = {"temperature": 0.2, "top_p": 0.5, "top_k": 7, "stop_sequences": ["A", "B"]}
    http("POST", "/v1/messages", json=body(max_tokens=9999, **extra))
    call = manager.calls[-1]
    sampling = call["sampling"]
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.2, 0.5, 7)
    assert call["stop"] == ("A", "B")
    assert call["max_tokens"] == 500  # the server's limit
    assert call["tools"] is None and call["grammar"] is None and call["label"] == "anthropic"
    http("POST", "/v1/messages", json=body())
    assert manager.calls[-1]["sampling"].temperature == 1.0  # Anthropic's default


def test_output_config_format_becomes_a_grammar(http, manager):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    config = {"format": {"type": "json_schema", "schema": schema}}
    assert http("POST", "/v1/messages", json=body(output_config=config)).status_code == 200
    assert "root" in manager.calls[-1]["grammar"]


def test_count_tokens_renders_what_a_message_would(http, manager):
    request = body(tools=[WEATHER], system="Be brief.")
    request.pop("max_tokens")
    response = http("POST", "/v1/messages/count_tokens", json=request)
    assert response.status_code == 200, response.text
    call = manager.calls[-1]
    assert response.json() == {"input_tokens": len(json.dumps(call["messages"]))}
    assert call["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [t.name for t in call["tools"].tools] == ["get_weather"]


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": []}, "at least one message"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}],
                    }
                ]
            },
            "'image'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "'document'",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "The answer is"},
                ]
            },
            "prefill",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool"}}, "name"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_k": 10**7}, "top_k"),
        ({"max_tokens": "5"}, "max_tokens"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image", "source": {}}],
                            }
                        ],
                    }
                ]
            },
            "'image' in a tool_result",
        ),
        ({"stop_sequences": ["x"] * 40}, "stop sequences"),
    ],
)
def test_refusals_are_400s_in_anthropic_s_envelope(http, manager, extra, words):
    request = {k: v for k, v in (body() | extra).items() if v is not None}
    response = http("POST", "/v1/messages", json=request)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert words in error["error"]["message"], error
    assert manager.calls == []


def test_errors_raise_the_sdk_s_exceptions(sdk, manager, app, run):
    create = sdk.client.messages.create
    message: Any = {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(anthropic.NotFoundError) as not_found:
        sdk.run(create(model="nope", **message))
    assert not_found.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "The specified model was not found (Model 'nope' is not available)",
        },
    }
    with pytest.raises(anthropic.BadRequestError):
        sdk.run(create(model=MODEL, max_tokens=10, messages=[]))
    manager.error = ShimmyError("server_busy", "The server is busy", headers={"Retry-After": "1"})
    with pytest.raises(anthropic.OverloadedError) as busy:
        sdk.run(create(model=MODEL, **message))
    assert busy.value.status_code == 529
    assert busy.value.response.headers["retry-after"] == "1"
    manager.error = None
    manager.generation_error = ShimmyError("generation_failed", "Text generation failed")
    with pytest.raises(anthropic.InternalServerError) as failed:
        sdk.run(create(model=MODEL, **message))
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]

    wrong = anthropic.AsyncAnthropic(
        base_url="http://test",
        api_key="sk-wrong",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
    )
    with pytest.raises(anthropic.AuthenticationError) as unauthorized:
        run(wrong.messages.create(model=MODEL, **message))
    run(wrong.close())
    assert unauthorized.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_auth_size_and_routing_errors_take_the_envelope_on_anthropic_s_paths_only(app, run, http):
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    for key in ({"x-api-key": "sk-right"}, {"authorization": "Bearer sk-right"}):
        headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "x", **key}
        answer = run(bare.post("/v1/messages?beta=true", json=body(), headers=headers))
        assert answer.status_code == 200
    run(bare.aclose())
    refused = http("POST", "/v1/messages", json=body(), headers={"x-api-key": "sk-wrong"})
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert refused.json()["type"] == "error"
    large = http("POST", "/v1/messages", json=body(system="x" * 5000))
    assert large.status_code == 413
    assert large.json()["error"]["type"] == "request_too_large"
    missing = http("POST", "/v1/messages/nothing", json=body())
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert http("GET", "/v1/messages").json()["error"]["type"] == "invalid_request_error"
    not_json = http("POST", "/v1/messages", content=b"{nope")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    # The other dialects keep their own shape.
    other = http("POST", "/v1/chat/completions", json={"model": "nope", "messages": []})
    assert set(other.json()["error"]) == {"code", "message", "details", "type"}
    refused = http("POST", "/v1/chat/completions", json={}, headers={"x-api-key": "sk-wrong"})
    assert refused.json()["error"]["code"] == "unauthorized"


def test_an_error_mid_stream_is_an_error_event_the_sdk_raises(http, sdk, manager):
    manager.generation_error = ShimmyError("generation_failed", "Text generation failed", "boom")
    got = events(http)
    assert got[-1] == (
        "error",
        {
            "type": "error",
            "error": {"type": "api_error", "message": "Text generation failed (boom)"},
        },
    )
    assert "message_stop" not in [name for name, _ in got]

    async def consume() -> None:
        stream = await sdk.client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}], stream=True
        )
        async for _ in stream:
            pass

    with pytest.raises(anthropic.APIStatusError, match="Text generation failed"):
        sdk.run(consume())


# -- the client going away -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_whose_client_leaves_is_cancelled(app, manager, run, stream):
    generation = Generation(GenerationRequest(prompt_tokens=[1]), MODEL)
    manager.live = generation  # never finishes on its own
    scope, receive, send, gone = asgi_post("/v1/messages", body(stream=stream))
    scope["headers"].append((b"x-api-key", b"sk-right"))

    async def scenario() -> None:
        task = asyncio.create_task(app(scope, receive, send))
        await eventually_async(lambda: manager.calls, timeout=5, what="the submission")
        if stream:  # one token reaches the client first
            generation.emit("Hi", 1)
            await eventually_async(lambda: b'"text":"Hi"' in send.body(), timeout=5)
        assert not generation.cancelled
        gone.set()
        await asyncio.wait_for(task, 5)

    run(scenario())
    assert generation.cancelled
