"""OpenAI's Responses API over a fake manager: exact shapes and event sequences,
what reaches the manager, the store behind previous_response_id, errors as the
openai SDK raises them, and cancellation when the client leaves.

The real model end to end, with the openai SDK, is tests/e2e/test_responses.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI

from shimmy.api.app import BodySizeLimit
from shimmy.api.dialects.responses.routes import build_router
from shimmy.api.dialects.responses.store import ResponseStore
from shimmy.api.errors import install_error_handlers
from shimmy.api.security import ApiKeyAuth
from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation, GenerationRequest
from shimmy.models.tools import ToolChoice, ToolRequest
from tests.api.fake_manager import HERMES_REPLY, MODEL, FakeManager, asgi_post
from tests.sse import sse_events
from tests.waiting import eventually_async

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def manager() -> FakeManager:
    return FakeManager()


@pytest.fixture
def store() -> ResponseStore:
    return ResponseStore(max_responses=3)


@pytest.fixture
def app(manager, store) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_router(manager, store))
    app.add_middleware(BodySizeLimit, limit=8192)
    app.add_middleware(ApiKeyAuth, keys=["sk-one", "sk-two"])
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
        headers={"authorization": "Bearer sk-one"},
    )
    yield lambda method, url, **kw: run(client.request(method, url, **kw))
    run(client.aclose())


@pytest.fixture
def sdk(app, run):
    client = openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key="sk-one",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
    )
    yield SimpleNamespace(client=client, run=run)
    run(client.close())


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "Hi", **extra}


def post(http, **extra: Any) -> dict[str, Any]:
    response = http("POST", "/v1/responses", json=body(**extra))
    assert response.status_code == 200, response.text
    return response.json()


def events(http, **extra: Any) -> list[tuple[str | None, dict[str, Any]]]:
    response = http("POST", "/v1/responses", json=body(stream=True, **extra))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    got = sse_events(response.text)
    assert all(data["type"] == name for name, data in got)
    assert [data["sequence_number"] for _, data in got] == list(range(len(got)))
    return got


# -- shapes ------------------------------------------------------------------------------


def test_a_response_has_openai_s_shape(http, manager):
    manager.cached_tokens = 1
    response = post(http, instructions="Be brief.", max_output_tokens=50, temperature=0.5)
    assert response["id"].startswith("resp_")
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["error"] is None and response["incomplete_details"] is None
    assert (response["instructions"], response["max_output_tokens"]) == ("Be brief.", 50)
    assert (response["model"], response["temperature"], response["store"]) == (MODEL, 0.5, True)
    [item] = response["output"]
    assert item["id"].startswith("msg_")
    assert item == {
        "id": item["id"],
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": "Hello, world", "annotations": [], "logprobs": []}
        ],
    }
    assert response["usage"] == {
        "input_tokens": 4,
        "input_tokens_details": {"cached_tokens": 1},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    }


def test_a_reply_cut_short_is_incomplete(http, manager):
    manager.reason = "length"
    response = post(http, max_output_tokens=3)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    got = events(http, max_output_tokens=3)
    assert got[-1][0] == "response.incomplete"
    assert got[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_the_text_stream_is_openai_s_event_sequence(http, manager):
    got = events(http)
    assert [name for name, _ in got] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = got[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert got[1][1]["response"] == created
    added = got[2][1]
    item_id = added["item"]["id"]
    assert added["output_index"] == 0
    assert added["item"] == {
        "id": item_id,
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    assert got[3][1] == {
        "type": "response.content_part.added",
        "sequence_number": 3,
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "part": empty,
    }
    assert [data["delta"] for _, data in got[4:7]] == ["Hello", ",", " world"]
    for _, data in got[4:9]:
        assert (data["item_id"], data["output_index"], data["content_index"]) == (item_id, 0, 0)
    assert got[7][1]["text"] == "Hello, world"
    assert got[8][1]["part"] == {**empty, "text": "Hello, world"}
    done = got[9][1]["item"]
    completed = got[10][1]["response"]
    assert completed["id"] == created["id"] and completed["status"] == "completed"
    assert completed["output"] == [done]
    assert done["status"] == "completed" and done["content"][0]["text"] == "Hello, world"
    assert completed["usage"]["output_tokens"] == 3


def test_function_calls_stream_as_items_with_argument_deltas(http, manager):
    manager.pieces = HERMES_REPLY
    got = events(http, tools=[WEATHER])
    names = [name for name, _ in got]
    added = [data for name, data in got if name == "response.output_item.added"]
    assert [(a["output_index"], a["item"]["type"]) for a in added] == [
        (0, "message"),
        (1, "function_call"),
        (2, "function_call"),
    ]
    for call in added[1:]:
        item = call["item"]
        assert item["id"].startswith("fc_") and item["call_id"] and item["arguments"] == ""
        assert (item["name"], item["status"]) == ("get_weather", "in_progress")
    # Each item's events come between its added and its done, in order.
    for index in range(3):
        mine = [name for name, data in got if data.get("output_index") == index]
        assert mine[0] == "response.output_item.added"
        assert mine[-1] == "response.output_item.done"
        if index:
            assert set(mine[1:-2]) == {"response.function_call_arguments.delta"}
            assert mine[-2] == "response.function_call_arguments.done"
    arguments = [
        (
            "".join(
                d["delta"]
                for n, d in got
                if n == "response.function_call_arguments.delta" and d["output_index"] == i
            ),
            next(
                d["arguments"]
                for n, d in got
                if n == "response.function_call_arguments.done" and d["output_index"] == i
            ),
        )
        for i in (1, 2)
    ]
    assert arguments == [('{"city": "Paris"}',) * 2, ('{"city": "Rome"}',) * 2]
    assert names[-1] == "response.completed"
    final = got[-1][1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    whole = post(http, tools=[WEATHER])
    assert [i["type"] for i in whole["output"]] == ["message", "function_call", "function_call"]
    assert whole["output"][0]["content"][0]["text"] == "Checking."
    assert [i["arguments"] for i in whole["output"][1:]] == [a for a, _ in arguments]


def test_the_sdk_s_stream_assembles_the_whole_response(sdk, manager):
    manager.pieces = HERMES_REPLY
    kwargs: Any = {"model": MODEL, "input": "Weather?", "tools": [WEATHER]}

    async def streamed() -> Any:
        async with sdk.client.responses.stream(**kwargs) as stream:
            return await stream.get_final_response()

    whole = sdk.run(sdk.client.responses.create(**kwargs))
    final = sdk.run(streamed())
    assert final.output_text == whole.output_text == "Checking."
    calls = [(i.name, i.arguments) for i in final.output if i.type == "function_call"]
    assert calls == [(i.name, i.arguments) for i in whole.output if i.type == "function_call"]
    assert calls == [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')]


# -- what reaches the manager ----------------------------------------------------------


def test_input_items_reach_the_template_in_chat_shape(http, manager):
    items = [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Oslo?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Looking.", "annotations": []}],
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Oslo"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "cold"},
    ]
    post(http, input=items, instructions="Be brief.", tools=[WEATHER])
    assert manager.calls[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Oslo?"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, ToolChoice("auto")),
        ("auto", False, ToolChoice("auto", parallel=False)),
        ("required", None, ToolChoice("required")),
        ("none", None, ToolChoice("none")),
        (
            {"type": "function", "name": "get_weather"},
            None,
            ToolChoice("named", "get_weather", parallel=False),
        ),
    ],
)
def test_tool_choice_maps_onto_the_tool_request(http, manager, choice, parallel, expected):
    extra: dict[str, Any] = {"tools": [WEATHER]}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    response = post(http, **extra)
    request = manager.calls[-1]["tools"]
    assert isinstance(request, ToolRequest) and request.choice == expected
    assert request.tools[0].parameters == WEATHER["parameters"]
    assert response["tools"][0]["name"] == "get_weather"
    assert response["tool_choice"] == (choice or "auto")


def test_sampling_limits_and_formats_reach_the_manager(http, manager):
    post(http, temperature=0.2, top_p=0.5, top_k=7, seed=3, max_output_tokens=9999)
    call = manager.calls[-1]
    sampling = call["sampling"]
    assert (sampling.temperature, sampling.top_p, sampling.top_k, sampling.seed) == (
        0.2,
        0.5,
        7,
        3,
    )
    assert call["max_tokens"] == 500  # the server's limit
    assert call["grammar"] is None and call["tools"] is None and call["label"] == "responses"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    text = {"format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}}
    assert post(http, text=text)["text"] == text
    assert "root" in manager.calls[-1]["grammar"]
    post(http, text={"format": {"type": "json_object"}})
    assert "root" in manager.calls[-1]["grammar"]


# -- previous_response_id and the store ---------------------------------------------------


def test_a_follow_up_continues_from_a_stored_response(http, manager):
    manager.pieces = [*HERMES_REPLY[:3], 'ments": {"city": "Paris"}}\n</tool_call>']
    first = post(http, input="Weather in Paris?", instructions="Old rules.", tools=[WEATHER])
    call = first["output"][1]
    manager.pieces = ["Sunny."]
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    second = post(http, input=[output], previous_response_id=first["id"], instructions="New rules.")
    assert second["previous_response_id"] == first["id"]
    assert manager.calls[-1]["messages"] == [
        {"role": "system", "content": "New rules."},  # instructions are not inherited
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": call["call_id"],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["call_id"], "content": "sunny"},
    ]
    # A streamed response is kept too, and chains go on.
    got = events(http, input="And Rome?", previous_response_id=second["id"])
    third = got[-1][1]["response"]["id"]
    post(http, input="Thanks", previous_response_id=third)
    assert [m["role"] for m in manager.calls[-1]["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    fetched = http("GET", f"/v1/responses/{second['id']}")
    assert fetched.status_code == 200 and fetched.json() == second


def test_missing_unstored_evicted_and_foreign_responses_are_404s(http, sdk, manager):
    kept = post(http)
    unstored = post(http, store=False)
    for missing in ("resp_nothing", unstored["id"]):
        answer = http("POST", "/v1/responses", json=body(previous_response_id=missing))
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "invalid_request"
        assert "not found" in answer.json()["error"]["message"]
    foreign = http(
        "POST",
        "/v1/responses",
        json=body(previous_response_id=kept["id"]),
        headers={"authorization": "Bearer sk-two"},
    )
    assert foreign.status_code == 404  # another key's clients cannot read it
    for _ in range(3):  # the store keeps 3
        post(http)
    with pytest.raises(openai.NotFoundError):
        create = sdk.client.responses.create
        sdk.run(create(model=MODEL, input="x", previous_response_id=kept["id"]))
    assert http("DELETE", f"/v1/responses/{unstored['id']}").status_code == 404
    latest = post(http)
    assert http("DELETE", f"/v1/responses/{latest['id']}").json()["deleted"] is True
    assert http("GET", f"/v1/responses/{latest['id']}").status_code == 404


def test_the_store_is_bounded_by_bytes_too():
    store = ResponseStore(max_responses=100, max_bytes=2000)
    for i in range(10):
        store.put("", {"id": f"resp_{i}", "text": "x" * 300}, [])
    assert store.size_bytes <= 2000 and 0 < len(store) < 10
    store.get("", "resp_9")
    with pytest.raises(ShimmyError):
        store.get("", "resp_0")
    store.put("", {"id": "huge", "text": "x" * 5000}, [])  # larger than the store: not kept
    with pytest.raises(ShimmyError):
        store.get("", "huge")


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"input": None}, "input is required"),
        ({"input": []}, "input is required"),
        ({"input": ""}, "input is required"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "'input_image'",
        ),
        ({"input": [{"type": "web_search_call", "id": "x"}]}, "'web_search_call'"),
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "nope"),
        ({"tool_choice": "required"}, "tool"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"temperature": 3}, "temperature"),
        ({"top_k": 10**7}, "top_k"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "schema"),
        ({"text": {"format": {"type": "yaml"}}}, "format"),
    ],
)
def test_refusals_are_clear_400s(http, manager, extra, words):
    request = {k: v for k, v in (body() | extra).items() if v is not None}
    response = http("POST", "/v1/responses", json=request)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["type"] == "invalid_request_error"
    assert words in error["message"] + (error["details"] or ""), error
    assert manager.calls == []


def test_errors_raise_the_sdk_s_exceptions(sdk, manager, app, run):
    create = sdk.client.responses.create
    with pytest.raises(openai.NotFoundError):
        sdk.run(create(model="nope", input="x"))
    with pytest.raises(openai.BadRequestError):
        sdk.run(create(model=MODEL, input="x", temperature=5))
    wrong = openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key="sk-wrong",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
    )
    with pytest.raises(openai.AuthenticationError):
        run(wrong.responses.create(model=MODEL, input="x"))
    run(wrong.close())


def test_a_failure_mid_stream_is_response_failed(http, manager):
    manager.generation_error = ShimmyError("generation_failed", "Text generation failed")
    got = events(http)
    assert got[-1][0] == "response.failed"
    failed = got[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "Text generation failed"}
    assert "response.completed" not in [name for name, _ in got]


# -- the client going away -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_whose_client_leaves_is_cancelled(app, manager, run, stream):
    generation = Generation(GenerationRequest(prompt_tokens=[1]), MODEL)
    manager.live = generation  # never finishes on its own
    scope, receive, send, gone = asgi_post("/v1/responses", body(stream=stream))
    scope["headers"].append((b"authorization", b"Bearer sk-one"))

    async def scenario() -> None:
        task = asyncio.create_task(app(scope, receive, send))
        await eventually_async(lambda: manager.calls, timeout=5, what="the submission")
        if stream:  # one token reaches the client first
            generation.emit("Hi", 1)
            await eventually_async(lambda: b'"delta":"Hi"' in send.body(), timeout=5)
        assert not generation.cancelled
        gone.set()
        await asyncio.wait_for(task, 5)

    run(scenario())
    assert generation.cancelled
