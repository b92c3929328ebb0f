"""The /v1 routes over a fake manager: exact shapes, what reaches the manager,
errors as the openai SDK sees them, and cancellation when the client leaves.

The real model end to end is in tests/e2e/test_openai.py; these pin down the
parts that a real model makes slow or nondeterministic to reach.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from shimmy.api.app import create_app
from shimmy.api.dialects.openai.routes import build_router as build_openai_router
from shimmy.api.errors import install_error_handlers
from shimmy.config import Settings
from shimmy.errors import ShimmyError, model_not_found
from shimmy.models.embeddings import Embeddings
from shimmy.models.generation import Generation, GenerationRequest
from shimmy.models.grammar import JSON_OBJECT_GBNF
from shimmy.models.manager import ModelManager
from shimmy.models.tools import ToolChoice, ToolRequest
from tests.api.fake_manager import HERMES_REPLY, asgi_post
from tests.waiting import eventually_async

MODEL = "fake-model"


def finished_generation(
    pieces: list[str],
    reason: str = "stop",
    error: ShimmyError | None = None,
    tools: ToolRequest | None = None,
) -> Generation:
    generation = Generation(GenerationRequest(prompt_tokens=[1, 2, 3], tools=tools), MODEL)
    for text in pieces:
        generation.emit(text, 7)
    generation.finish(reason, error)
    return generation


class FakeManager:
    """Just the surface of ModelManager the /v1 routes use."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "fake-model.gguf"
        path.write_bytes(b"GGUF")
        self.settings = Settings(max_tokens_limit=500)
        entry = SimpleNamespace(
            name=MODEL,
            path=path,
            usable=True,
            offered=True,
            error=None,
            origin=None,
            source="path",
            size=4,
            context_length=2048,
            quantization="Q4_1",
        )
        broken = SimpleNamespace(
            **{**vars(entry), "name": "broken", "usable": False, "offered": False}
        )
        # A preset's Hugging Face model, pulled when first used: offered, not yet usable.
        to_pull = SimpleNamespace(
            **{**vars(entry), "name": "fresh", "usable": False, "path": tmp_path / "-", "size": 0}
        )
        self.entries = [entry, broken, to_pull]
        self.registry = SimpleNamespace(entries=lambda: self.entries)
        self.calls: list[dict[str, Any]] = []
        self.pieces = ["Hello", ",", " world"]
        self.reason = "stop"
        self.error: ShimmyError | None = None  # raised by submit
        self.generation_error: ShimmyError | None = None  # ends the generation
        self.live: Generation | None = None  # when set, submit returns it unfinished
        self.tool_format = "hermes"  # the format the fake model writes calls in

    def resolve(self, name: str | None) -> Any:
        if name == "secret":
            raise ShimmyError("unauthorized", "Invalid API key")
        for entry in self.entries:
            if name in (entry.name, "default", None):
                return entry
        raise model_not_found(name or "")

    def loaded_names(self) -> list[str]:
        return [MODEL]

    def is_loaded(self, name: str) -> bool:
        return name == MODEL

    def _generation(self, name: str | None, **call: Any) -> Generation:
        self.resolve(name)
        self.calls.append({"model": name, **call})
        if self.error is not None:
            raise self.error
        if self.live is not None:
            return self.live
        reason = "error" if self.generation_error else self.reason
        tools = call.get("tools")
        if tools is not None:  # the real manager sets the model's format
            tools = replace(tools, format=self.tool_format)
        return finished_generation(self.pieces, reason, self.generation_error, tools)

    def submit_chat(self, name: str | None, messages: Any, **kwargs: Any) -> Generation:
        return self._generation(name, messages=messages, **kwargs)

    def submit_prompt(self, name: str | None, prompt: str, **kwargs: Any) -> Generation:
        return self._generation(name, prompt=prompt, **kwargs)

    def embed(self, name: str | None, inputs: list[str]) -> Embeddings:
        self.resolve(name)
        vectors = [[float(len(text)), 0.5, -0.25] for text in inputs]
        return Embeddings(vectors, sum(len(t) for t in inputs), MODEL)


@pytest.fixture
def manager(tmp_path) -> FakeManager:
    return FakeManager(tmp_path)


@pytest.fixture
def app(manager) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_openai_router(manager))
    return app


@pytest.fixture
def run():
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def http(app, run):
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    yield lambda method, url, **kw: run(client.request(method, url, **kw))
    run(client.aclose())


@pytest.fixture
def sdk(app, run):
    client = openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key="unused",
        max_retries=0,
        # The SDK's type names its own httpx2 clients; it takes httpx's as well.
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),  # type: ignore[arg-type]
    )
    yield SimpleNamespace(client=client, run=run)
    run(client.close())


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **extra}


def sse_data(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("text/event-stream")
    return [
        line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")
    ]


# -- shapes ---------------------------------------------------------------------


def test_chat_completion_has_openai_shape(http):
    response = http("POST", "/v1/chat/completions", json=chat_body())
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "choices",
        "usage",
    ]
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == MODEL
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"]["prompt_tokens"] == 3
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == 6


def test_chat_stream_chunks_role_first_finish_last_then_usage_then_done(http):
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = sse_data(http("POST", "/v1/chat/completions", json=body))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert content == ["Hello", ",", " world"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 6


def test_chat_stream_without_include_usage_has_no_usage(http):
    events = sse_data(http("POST", "/v1/chat/completions", json=chat_body(stream=True)))
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_length_finish_reason(http, manager):
    manager.reason = "length"
    body = http("POST", "/v1/chat/completions", json=chat_body()).json()
    assert body["choices"][0]["finish_reason"] == "length"


def test_sdk_parses_chat_and_stream(sdk):
    result = sdk.run(
        sdk.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    )
    assert result.choices[0].message.content == "Hello, world"

    async def stream() -> list[Any]:
        chunks = await sdk.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
        )
        return [c async for c in chunks]

    chunks = sdk.run(stream())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello, world"


def test_models_list_and_retrieve(sdk):
    models = sdk.run(sdk.client.models.list()).data
    assert [m.id for m in models] == [MODEL, "fresh"]  # the unusable one is not offered
    model = models[0]
    assert sdk.run(sdk.client.models.retrieve("fresh")).created == 0  # no file yet
    assert model.object == "model" and model.owned_by == "path" and model.created > 0
    assert sdk.run(sdk.client.models.retrieve(MODEL)).id == MODEL
    assert sdk.run(sdk.client.models.retrieve("default")).id == MODEL
    with pytest.raises(openai.NotFoundError):
        sdk.run(sdk.client.models.retrieve("nope"))
    with pytest.raises(openai.NotFoundError):
        sdk.run(sdk.client.models.retrieve("broken"))


# -- what reaches the manager -------------------------------------------------------


def test_chat_fields_reach_the_manager(http, manager):
    body = chat_body(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": None},
        ],
        temperature=0,
        top_p=0.5,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        stop="END",
        max_tokens=10,
        max_completion_tokens=20,
        user="someone",
        logit_bias={},  # unknown fields are ignored
    )
    assert http("POST", "/v1/chat/completions", json=body).status_code == 200
    call = manager.calls[-1]
    assert call["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": ""},
    ]
    sampling = call["sampling"]
    assert (sampling.temperature, sampling.top_p, sampling.seed) == (0, 0.5, 7)
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.5, -0.5)
    assert call["stop"] == ("END",)
    assert call["max_tokens"] == 20  # max_completion_tokens wins
    assert call["grammar"] is None


def test_max_tokens_defaults_to_and_is_bounded_by_the_limit(http, manager):
    http("POST", "/v1/chat/completions", json=chat_body())
    assert manager.calls[-1]["max_tokens"] == 500
    http("POST", "/v1/chat/completions", json=chat_body(max_tokens=10_000))
    assert manager.calls[-1]["max_tokens"] == 500


def test_response_format_becomes_a_grammar(http, manager):
    http("POST", "/v1/chat/completions", json=chat_body(response_format={"type": "json_object"}))
    assert manager.calls[-1]["grammar"] == JSON_OBJECT_GBNF
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    http("POST", "/v1/chat/completions", json=chat_body(response_format=fmt))
    assert '"\\"age\\""' in manager.calls[-1]["grammar"]
    http("POST", "/v1/chat/completions", json=chat_body(response_format={"type": "text"}))
    assert manager.calls[-1]["grammar"] is None


def test_completions_several_prompts_and_echo(http, manager):
    body = {"model": MODEL, "prompt": ["one", "two"], "echo": True, "stop": ["x", "y"]}
    result = http("POST", "/v1/completions", json=body).json()
    assert result["object"] == "text_completion" and result["id"].startswith("cmpl-")
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert [c["text"] for c in result["choices"]] == ["oneHello, world", "twoHello, world"]
    assert result["usage"]["prompt_tokens"] == 6 and result["usage"]["completion_tokens"] == 6
    assert [c["prompt"] for c in manager.calls] == ["one", "two"]
    assert all(c["raw"] is True for c in manager.calls)  # no chat template on /v1/completions
    assert manager.calls[0]["max_tokens"] == 16  # OpenAI's default for completions


def test_completions_stream(http):
    body = {
        "model": MODEL,
        "prompt": ["a", "b"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse_data(http("POST", "/v1/completions", json=body))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for index in (0, 1):
        mine = [
            c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index
        ]
        assert "".join(c["text"] for c in mine) == "Hello, world"
        assert mine[-1]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 12


def test_embeddings_float_and_base64_agree(sdk, http):
    floats = http("POST", "/v1/embeddings", json={"model": MODEL, "input": ["ab", "abc"]}).json()
    assert floats["object"] == "list" and floats["model"] == MODEL
    assert [d["embedding"] for d in floats["data"]] == [[2.0, 0.5, -0.25], [3.0, 0.5, -0.25]]
    assert floats["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    # The SDK asks for base64 unless told otherwise, and decodes it.
    decoded = sdk.run(sdk.client.embeddings.create(model=MODEL, input=["ab", "abc"]))
    assert [d.embedding for d in decoded.data] == [[2.0, 0.5, -0.25], [3.0, 0.5, -0.25]]


# -- errors as the SDK sees them -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (chat_body(n=0), "n: Input should be greater than or equal to 1"),
        (chat_body(messages=[]), "at least one message"),
        (chat_body(top_logprobs=3), "top_logprobs needs logprobs"),
        (chat_body(logprobs=True, top_logprobs=21), "top_logprobs"),
        (
            chat_body(
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
            ),
            "image_url",
        ),
        (chat_body(messages=[{"role": "wizard", "content": "x"}]), "role"),
        (chat_body(temperature="hot"), "temperature"),
        (chat_body(extra_body={"top_k": 2**64}), "top_k"),
        (chat_body(response_format={"type": "xml"}), "xml"),
        (
            chat_body(response_format={"type": "json_schema", "json_schema": {"schema": 3}}),
            "schema",
        ),
    ],
)
def test_bad_chat_requests_are_400_with_a_clear_message(sdk, body, words):
    with pytest.raises(openai.BadRequestError) as err:
        sdk.run(sdk.client.chat.completions.create(**body))
    assert err.value.status_code == 400
    assert words in err.value.message
    assert err.value.code == "invalid_request"
    assert err.value.type == "invalid_request_error"


def test_bad_completion_and_embedding_requests(http):
    cases = [
        ("/v1/completions", {"model": MODEL, "prompt": [1, -2, 3]}, "greater than or equal to 0"),
        ("/v1/completions", {"model": MODEL, "prompt": [[1], ["a"]]}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "suffix": "y"}, "suffix"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "n": 0}, "n: Input should be"),
        ("/v1/embeddings", {"model": MODEL, "input": [[]]}, "input"),
        ("/v1/embeddings", {"model": MODEL, "input": [1.5, 2]}, "input"),
        ("/v1/embeddings", {"model": MODEL, "input": []}, "input"),
        ("/v1/embeddings", {"model": MODEL, "input": "x", "dimensions": 2}, "dimensions"),
    ]
    for url, body, words in cases:
        response = http("POST", url, json=body)
        assert response.status_code == 400, (body, response.text)
        assert words in response.json()["error"]["message"], (body, response.text)


def test_token_arrays_reach_the_manager_as_token_ids(http, manager):
    body = {"model": MODEL, "prompt": [[5, 6], "text", [7]], "max_tokens": 2}
    assert http("POST", "/v1/completions", json=body).status_code == 200
    assert [c["prompt"] for c in manager.calls] == [[5, 6], "text", [7]]
    response = http("POST", "/v1/embeddings", json={"model": MODEL, "input": [[1, 2], "ab"]})
    assert response.status_code == 200 and len(response.json()["data"]) == 2


def test_not_json_is_400(http):
    response = http("POST", "/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
    response = http("POST", "/v1/chat/completions")
    assert "must be a JSON object" in response.json()["error"]["message"]


def test_error_statuses_map_to_sdk_exceptions(sdk, manager):
    create = sdk.client.chat.completions.create
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.run(create(model="nope", messages=[{"role": "user", "content": "x"}]))
    assert "nope" in str(not_found.value.body)
    with pytest.raises(openai.AuthenticationError):
        sdk.run(create(model="secret", messages=[{"role": "user", "content": "x"}]))

    manager.error = ShimmyError(
        "server_busy", "The server is busy", "1 waiting", headers={"Retry-After": "1"}
    )
    with pytest.raises(openai.InternalServerError) as busy:
        sdk.run(create(model=MODEL, messages=[{"role": "user", "content": "x"}]))
    assert busy.value.status_code == 503
    assert busy.value.response.headers["retry-after"] == "1"

    manager.error = ShimmyError("invalid_request", "The prompt is 5000 tokens, but ... 1024")
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk.run(create(model=MODEL, messages=[{"role": "user", "content": "x"}]))
    assert "5000 tokens" in too_long.value.message

    manager.error = None
    manager.generation_error = ShimmyError("generation_failed", "Text generation failed", "boom")
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.run(create(model=MODEL, messages=[{"role": "user", "content": "x"}]))
    assert failed.value.status_code == 500


def test_error_mid_stream_is_an_error_event_the_sdk_raises(sdk, http, manager):
    manager.generation_error = ShimmyError("generation_failed", "Text generation failed", "boom")
    events = sse_data(http("POST", "/v1/chat/completions", json=chat_body(stream=True)))
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "generation_failed"

    async def consume() -> None:
        stream = await sdk.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
        )
        async for _ in stream:
            pass

    with pytest.raises(openai.APIError, match="Text generation failed"):
        sdk.run(consume())


# -- the client going away ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_whose_client_leaves_is_cancelled(app, manager, run, stream):
    """Whether it waits in the queue (no token yet) or streams: the core's watch
    has listened since the request was prepared."""
    generation = Generation(GenerationRequest(prompt_tokens=[1]), MODEL)
    manager.live = generation  # never finishes on its own
    scope, receive, send, gone = asgi_post("/v1/chat/completions", chat_body(stream=stream))

    async def scenario() -> None:
        task = asyncio.create_task(app(scope, receive, send))
        await eventually_async(lambda: manager.calls, timeout=5, what="the submission")
        if stream:  # one token reaches the client first
            generation.emit("Hi", 1)
            await eventually_async(
                lambda: any(b'"content":"Hi"' in m.get("body", b"") for m in send.sent),
                timeout=5,
            )
        assert not generation.cancelled
        gone.set()
        await asyncio.wait_for(task, 5)

    run(scenario())
    assert generation.cancelled


def test_create_app_serves_the_v1_routes(isolated_home):
    manager = ModelManager(Settings())
    try:
        paths = set(create_app(manager).openapi()["paths"])
    finally:
        manager.close()
    assert {"/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"} <= paths
    assert "/api/generate" in paths


def test_a_bug_is_a_500_server_error_without_a_traceback_and_the_next_request_works(
    app, manager, run
):
    calls = 0
    real = manager._generation

    def buggy(*args: Any, **kwargs: Any) -> Generation:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("secret internals /home/someone/file.py line 12")
        return real(*args, **kwargs)

    manager._generation = buggy
    # As uvicorn does, send the 500 and don't raise the exception into the client.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://test")
    try:
        broken = run(client.post("/v1/chat/completions", json=chat_body()))
        after = run(client.post("/v1/chat/completions", json=chat_body()))
    finally:
        run(client.aclose())
    assert broken.status_code == 500
    assert broken.json() == {
        "error": {
            "code": "server_error",
            "message": "Internal server error",
            "details": "RuntimeError",
            "type": "server_error",
        }
    }
    assert "Traceback" not in broken.text and "secret" not in broken.text
    assert after.status_code == 200
    assert after.json()["choices"][0]["message"]["content"] == "Hello, world"


# -- tool calls --------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_reach_the_manager_as_a_tool_request(http, manager):
    body = chat_body(tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False)
    assert http("POST", "/v1/chat/completions", json=body).status_code == 200
    request = manager.calls[-1]["tools"]
    assert isinstance(request, ToolRequest)
    assert [t.name for t in request.tools] == ["get_weather"]
    assert request.tools[0].parameters["properties"] == {"city": {"type": "string"}}
    assert request.choice == ToolChoice("required", None, parallel=False)
    body = chat_body(
        tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    http("POST", "/v1/chat/completions", json=body)
    assert manager.calls[-1]["tools"].choice == ToolChoice("named", "get_weather", parallel=False)
    http("POST", "/v1/chat/completions", json=chat_body())
    assert manager.calls[-1]["tools"] is None


def test_the_history_s_calls_and_results_reach_the_template(http, manager):
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "cold"},
    ]
    http("POST", "/v1/chat/completions", json=chat_body(messages=messages, tools=[WEATHER_TOOL]))
    sent = manager.calls[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }
    assert sent[2] == {"role": "tool", "content": "cold", "tool_call_id": "call_9"}


def test_calls_come_back_as_openai_tool_calls(http, manager):
    manager.pieces = HERMES_REPLY
    body = http("POST", "/v1/chat/completions", json=chat_body(tools=[WEATHER_TOOL])).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    ]
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert len({c["id"] for c in calls}) == 2


def test_calls_stream_as_openai_deltas_and_markers_never_leak(http, manager):
    manager.pieces = HERMES_REPLY
    events = sse_data(
        http("POST", "/v1/chat/completions", json=chat_body(tools=[WEATHER_TOOL], stream=True))
    )
    chunks = [json.loads(e) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    content = "".join(d.get("content") or "" for d in deltas)
    assert "tool_call" not in content and content.strip() == "Checking."
    parts = [p for d in deltas for p in d.get("tool_calls", [])]
    firsts = [p for p in parts if "id" in p]
    assert [(p["index"], p["function"]["name"], p["type"]) for p in firsts] == [
        (0, "get_weather", "function"),
        (1, "get_weather", "function"),
    ]
    arguments = [
        "".join(p["function"]["arguments"] for p in parts if p["index"] == i) for i in (0, 1)
    ]
    assert arguments == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_botched_call_is_content_not_an_error(http, manager):
    manager.pieces = ["I'd call <tool_call> nothing"]
    body = http("POST", "/v1/chat/completions", json=chat_body(tools=[WEATHER_TOOL])).json()
    assert body["choices"][0]["message"]["content"] == "I'd call <tool_call> nothing"
    assert "tool_calls" not in body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "1-64 letters"),
        ({"tools": [{"type": "function"}]}, "function"),
        ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "type"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER_TOOL] * 200}, "200"),
    ],
)
def test_bad_tools_are_400s_that_say_what(http, manager, extra, message):
    body = {**chat_body(tools=[WEATHER_TOOL]), **extra}
    response = http("POST", "/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert manager.calls == []
