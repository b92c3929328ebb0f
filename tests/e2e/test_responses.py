"""The openai SDK's Responses API (``client.responses``) against `shimmy serve` (a
subprocess) with the real SmolLM2: text, a stream equal to the whole response,
a forced function call then its function_call_output, previous_response_id, and
structured text. The exact event sequences are pinned in
tests/api/test_responses_routes.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.harness import Server, isolated_env, start_server
from tests.sse import sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
QUESTION = "What is the capital of France?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("responses")
    srv = start_server(["--ctx-size", "4096", "--parallel", "2"], isolated_env(root), cwd=root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=240
    ) as c:
        yield c


def ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("input", QUESTION)
    kwargs.setdefault("max_output_tokens", 30)
    kwargs.setdefault("temperature", 0)
    return client.responses.create(model=MODEL, **kwargs)


def test_text(client):
    response = ask(client, instructions="You are a geography teacher.")
    assert response.object == "response" and response.model == MODEL
    assert response.status in ("completed", "incomplete")
    assert [item.type for item in response.output] == ["message"]
    assert "Paris" in response.output_text
    assert response.usage.input_tokens > 10 and 0 < response.usage.output_tokens <= 30


def test_max_output_tokens_makes_it_incomplete(client):
    response = ask(client, max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3


def test_streamed_text_equals_the_non_streamed(client):
    whole = ask(client, max_output_tokens=40)
    with ask(client, max_output_tokens=40, stream=True) as stream:
        events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response
    assert "".join(deltas) == final.output_text == whole.output_text
    assert final.status == whole.status
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_the_sdk_s_stream_helper_gets_the_final_response(client):
    """``responses.stream`` wants a ``response.completed``: a reply that ends."""
    whole = ask(client, input="Say hello.", max_output_tokens=200)
    assert whole.status == "completed"
    with client.responses.stream(
        model=MODEL, input="Say hello.", max_output_tokens=200, temperature=0
    ) as stream:
        final = stream.get_final_response()
    assert final.output_text == whole.output_text


def test_a_forced_function_call_then_its_output(client):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "function", "name": "get_weather"}
    response = ask(
        client, input=question, tools=[WEATHER], tool_choice=forced, max_output_tokens=100
    )
    assert response.status == "completed"
    [call] = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])

    # The client sends the history back: the question, the output, the result.
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "21 C, sunny"}
    history = [*question, *[item.model_dump() for item in response.output], result]
    answer = ask(client, input=history, tools=[WEATHER], tool_choice="none")
    assert [item.type for item in answer.output] == ["message"] and answer.output_text

    # previous_response_id: the server keeps the history; the same prompt is read.
    continued = ask(
        client,
        input=[result],
        previous_response_id=response.id,
        tools=[WEATHER],
        tool_choice="none",
    )
    assert continued.previous_response_id == response.id
    assert continued.usage.input_tokens == answer.usage.input_tokens
    assert continued.output_text == answer.output_text
    assert client.responses.retrieve(continued.id).output_text == continued.output_text


def test_a_missing_previous_response_is_not_found(client):
    unstored = ask(client, store=False, max_output_tokens=5)
    for missing in ("resp_nothing", unstored.id):
        with pytest.raises(openai.NotFoundError, match="not found"):
            ask(client, previous_response_id=missing)
    with pytest.raises(openai.BadRequestError, match="input_image"):
        ask(
            client, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]
        )


def test_text_format_json_schema(client):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "country": {"type": "string", "maxLength": 30},
        },
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    text: Any = {
        "format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}
    }
    response = ask(client, text=text, max_output_tokens=80)
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), schema)


def test_a_forced_call_streams_openai_s_exact_event_sequence(server):
    body = {
        "model": MODEL,
        "input": "What is the weather in Paris?",
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 100,
        "temperature": 0,
        "stream": True,
    }
    with httpx.Client(base_url=server.url, timeout=240) as http:
        response = http.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    got = sse_events(response.text)
    names = [name for name, _ in got]
    deltas = names.count("response.function_call_arguments.delta")
    assert deltas >= 1
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(data["type"] == name for name, data in got)
    assert [data["sequence_number"] for _, data in got] == list(range(len(got)))
    item = got[2][1]["item"]
    assert got[2][1]["output_index"] == 0 and item["type"] == "function_call"
    assert all(data.get("item_id", item["id"]) == item["id"] for _, data in got[2:-1])
    arguments = "".join(
        data["delta"] for name, data in got if name == "response.function_call_arguments.delta"
    )
    assert got[-3][1]["arguments"] == arguments == got[-2][1]["item"]["arguments"]
    jsonschema.validate(json.loads(arguments), WEATHER["parameters"])
    assert got[-1][1]["response"]["output"] == [got[-2][1]["item"]]
