"""Anthropic's official Python SDK against `shimmy serve` (a subprocess) with the
real SmolLM2: messages, streams, stop sequences, forced tool use and its
tool_result turn, count_tokens, and errors as the SDK's exceptions. The exact
event sequences are pinned in tests/api/test_anthropic_routes.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.e2e.harness import Server, isolated_env, start_server
from tests.sse import sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
KEY = "sk-shimmy-anthropic"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}
ADD = {
    "name": "add",
    "description": "Add two integers",
    "input_schema": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}
SCHEMAS = {t["name"]: t["input_schema"] for t in (WEATHER, ADD)}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("anthropic")
    args = ["--ctx-size", "4096", "--parallel", "2", "--api-key", KEY]
    srv = start_server(args, isolated_env(root), cwd=root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=240) as c:
        yield c


# This SDK takes sampling settings only as extra body fields (its create() has no
# temperature argument): shimmy reads them from the body either way.
GREEDY = {"temperature": 0}


def ask(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", QUESTION)
    kwargs.setdefault("max_tokens", 30)
    kwargs.setdefault("extra_body", GREEDY)
    return client.messages.create(model=MODEL, **kwargs)


def text_of(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_a_message(client):
    message = ask(client, system="You are a geography teacher.")
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert "Paris" in text_of(message)
    assert message.stop_reason in ("end_turn", "max_tokens") and message.stop_sequence is None
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 10
    assert 0 < message.usage.output_tokens <= 30


def test_a_streamed_message_equals_the_final_one(client):
    whole = ask(client, max_tokens=40)
    with client.messages.stream(
        model=MODEL, messages=QUESTION, max_tokens=40, extra_body=GREEDY
    ) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed_text == text_of(final) == text_of(whole)
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_sampling_settings_reach_the_sampler(client):
    greedy = ask(client, max_tokens=20)
    top_1 = ask(client, max_tokens=20, extra_body={"temperature": 1.0, "top_k": 1, "top_p": 1.0})
    assert text_of(top_1) == text_of(greedy)  # only the likeliest token left to sample


def test_a_stop_sequence_ends_the_text_before_it(client):
    free = text_of(ask(client, max_tokens=30))
    words = free.split()
    assert len(words) >= 4, free
    stop = words[3]
    message = ask(client, max_tokens=30, stop_sequences=[stop, "\u2603"])
    assert text_of(message) == free[: free.index(stop)]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)


@pytest.mark.parametrize(
    ("prompt", "choice"),
    [
        ("What is the weather in Paris?", {"type": "any"}),
        ("Add 3 and 4.", {"type": "tool", "name": "add"}),
    ],
)
def test_forced_tool_use_validates_then_a_tool_result_turn(client, prompt, choice):
    question = [{"role": "user", "content": prompt}]
    message = ask(
        client, messages=question, tools=[WEATHER, ADD], tool_choice=choice, max_tokens=100
    )
    assert message.stop_reason == "tool_use"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert uses, message
    for use in uses:
        assert use.id
        jsonschema.validate(use.input, SCHEMAS[use.name])
    if choice["type"] == "tool":
        assert [use.name for use in uses] == [choice["name"]]

    # The next turn carries the call and its result, and gets a text answer.
    results = [
        {"type": "tool_result", "tool_use_id": use.id, "content": "21 degrees and sunny"}
        for use in uses
    ]
    follow_up = [
        *question,
        {"role": "assistant", "content": [block.model_dump() for block in message.content]},
        {"role": "user", "content": results},
    ]
    unforced: Any = {"tools": [WEATHER, ADD], "tool_choice": {"type": "none"}}
    answer = ask(client, messages=follow_up, **unforced)
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [block.type for block in answer.content] == ["text"] and text_of(answer)
    # The call and its result are in the prompt the model read, as count_tokens says.
    read = answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0)
    assert (
        read
        == client.messages.count_tokens(model=MODEL, messages=follow_up, **unforced).input_tokens
    )
    alone = client.messages.count_tokens(model=MODEL, messages=question, **unforced)
    assert read > alone.input_tokens + 10


def test_a_streamed_tool_use_equals_the_whole_one(client):
    kwargs: Any = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Add 3 and 4."}],
        "max_tokens": 100,
        "extra_body": GREEDY,
        "tools": [WEATHER, ADD],
        "tool_choice": {"type": "tool", "name": "add"},
    }
    whole = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        (b.type, b.name, b.input) for b in whole.content if b.type == "tool_use"
    ]
    assert final.stop_reason == whole.stop_reason == "tool_use"


def test_count_tokens_is_the_prompt_a_message_reads(client):
    counted = client.messages.count_tokens(model=MODEL, messages=QUESTION, system="Be brief.")
    message = ask(client, system="Be brief.", max_tokens=5)
    usage = message.usage
    assert counted.input_tokens == usage.input_tokens + (usage.cache_read_input_tokens or 0)
    with_tools = client.messages.count_tokens(
        model=MODEL, messages=QUESTION, system="Be brief.", tools=[WEATHER]
    )
    assert with_tools.input_tokens > counted.input_tokens + 10


def test_the_bearer_token_of_anthropic_auth_token_works(server):
    """Claude Code's ANTHROPIC_AUTH_TOKEN is sent as ``Authorization: Bearer``."""
    with anthropic.Anthropic(
        base_url=server.url, auth_token=KEY, max_retries=0, timeout=240
    ) as bearer:
        message = ask(bearer, max_tokens=5)
    assert message.content


def test_errors_are_the_sdk_s_exceptions(client, server):
    with pytest.raises(anthropic.NotFoundError, match="not available"):
        client.messages.create(model="claude-nope", max_tokens=5, messages=QUESTION)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}
    with pytest.raises(anthropic.BadRequestError, match="'image'"):
        ask(client, messages=[{"role": "user", "content": [image]}])
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        ask(client, max_tokens=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-nope", messages=QUESTION)
    with anthropic.Anthropic(
        base_url=server.url, api_key="sk-wrong", max_retries=0, timeout=60
    ) as wrong:
        with pytest.raises(anthropic.AuthenticationError):
            ask(wrong)


def test_a_forced_tool_use_streams_anthropic_s_exact_event_sequence(server):
    body = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Add 3 and 4."}],
        "tools": [WEATHER, ADD],
        "tool_choice": {"type": "tool", "name": "add"},
        "temperature": 0,
        "stream": True,
    }
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=240) as http:
        response = http.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    got = sse_events(response.text)
    names = [name for name, _ in got]
    deltas = names.count("content_block_delta")
    assert deltas >= 1
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in got)
    block = got[1][1]
    assert block["index"] == 0 and block["content_block"]["type"] == "tool_use"
    assert block["content_block"]["name"] == "add" and block["content_block"]["input"] == {}
    pieces = [data for name, data in got if name == "content_block_delta"]
    assert all(d["index"] == 0 and d["delta"]["type"] == "input_json_delta" for d in pieces)
    jsonschema.validate(
        json.loads("".join(d["delta"]["partial_json"] for d in pieces)), SCHEMAS["add"]
    )
    assert got[-3][1] == {"type": "content_block_stop", "index": 0}
    assert got[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
