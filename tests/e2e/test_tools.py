"""Tool calls with the official openai SDK and pydantic-ai against the real
`shimmy serve` and SmolLM2, whose chat template knows nothing of tools (the
generic format: calls are constrained by grammar, so even this 135M model
returns calls whose arguments match their schema)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.harness import Server, isolated_env, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"


def tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


TOOLS = [
    tool(
        "get_weather",
        "The weather in a city",
        {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        ["city", "unit"],
    ),
    tool(
        "add", "Add two integers", {"a": {"type": "integer"}, "b": {"type": "integer"}}, ["a", "b"]
    ),
    tool(
        "book_flight",
        "Book a flight",
        {
            "route": {
                "type": "object",
                "properties": {
                    "from": {"type": "string", "maxLength": 40},
                    "to": {"type": "string", "maxLength": 40},
                },
                "required": ["from", "to"],
            },
            "passengers": {"type": "integer"},
            "window_seat": {"type": "boolean"},
        },
        ["route", "passengers"],
    ),
    tool(
        "tag_photo",
        "Tag a photo with keywords",
        {
            "photo_id": {"type": "string", "maxLength": 20},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 20},
                "minItems": 1,
                "maxItems": 5,
            },
        },
        ["photo_id", "tags"],
    ),
    tool(
        "set_alarm",
        "Set an alarm",
        {
            "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
            "repeat": {"type": "string", "enum": ["never", "daily", "weekdays"]},
            "label": {"type": "string", "maxLength": 40},
        },
        ["time", "repeat"],
    ),
]
PROMPTS = [
    "What is the weather in Paris?",
    "Add 3 and 4.",
    "Book me a flight from Oslo to Rome for two people.",
    "Tag photo p-17 as beach and sunset.",
    "Wake me at 07:30 every weekday.",
    "Is it cold in Reykjavik today, in fahrenheit?",
    "What is 1200 plus 34?",
    "I need a window seat from Lima to Quito, just me.",
    "Label picture 42 with cat.",
    "Set an alarm for 23:05, once, called pills.",
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tools")
    srv = start_server(["--ctx-size", "4096", "--parallel", "2"], isolated_env(root), cwd=root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, prompt: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=200,
        temperature=0,
        **kwargs,
    )


def valid_calls(message: Any) -> list[tuple[str, dict]]:
    calls = []
    for call in message.tool_calls or []:
        assert call.type == "function" and call.id.startswith("call_")
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, SCHEMAS[call.function.name])
        calls.append((call.function.name, arguments))
    return calls


CASES = [(prompt, choice) for prompt in PROMPTS for choice in ["required", *SCHEMAS]]


@pytest.mark.parametrize(("prompt", "choice"), CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_forced_calls_always_validate_against_their_schema(client, prompt, choice):
    """60 prompts and choices: "required" lets the model pick the tools, a named
    choice gives exactly that tool, once."""
    tool_choice: Any = (
        "required" if choice == "required" else {"type": "function", "function": {"name": choice}}
    )
    result = ask(client, prompt, tools=TOOLS, tool_choice=tool_choice)
    choice_0 = result.choices[0]
    assert choice_0.finish_reason == "tool_calls", choice_0
    calls = valid_calls(choice_0.message)
    assert calls
    if choice != "required":
        assert [name for name, _ in calls] == [choice]


def test_none_gives_plain_text(client):
    result = ask(client, "What is the weather in Paris?", tools=TOOLS, tool_choice="none")
    assert result.choices[0].message.tool_calls is None
    assert result.choices[0].finish_reason in ("stop", "length")
    assert result.choices[0].message.content


def test_auto_gives_a_valid_call_or_text(client):
    for prompt in PROMPTS[:4]:
        result = ask(client, prompt, tools=TOOLS)
        message = result.choices[0].message
        if message.tool_calls:
            assert result.choices[0].finish_reason == "tool_calls"
            valid_calls(message)
        else:
            assert message.content


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "add"}}]
)
def test_a_streamed_call_assembled_is_the_non_streamed_one(client, tool_choice):
    # Asked once before, so that both requests below find the prompt in a slot:
    # llama.cpp's logits for a prompt read in one batch and for its last token
    # decoded alone differ in the last bits, which can tip a near-tie.
    ask(client, PROMPTS[1], tools=TOOLS, tool_choice=tool_choice, seed=5)
    whole = ask(client, PROMPTS[1], tools=TOOLS, tool_choice=tool_choice, seed=5)
    expected = [
        (c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls
    ]
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in ask(client, PROMPTS[1], tools=TOOLS, tool_choice=tool_choice, seed=5, stream=True):
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"name": "", "arguments": "", "id": ""})
            if part.id:
                assert not call["id"], "an id comes once, in the call's first delta"
                call["id"] = part.id
                call["name"] = part.function.name
            call["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == expected
    assert all(c["id"].startswith("call_") for c in calls.values())


def second_turn(result_text: str) -> list[dict[str, Any]]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    }
    return [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": result_text},
    ]


def test_a_second_turn_with_the_call_and_its_result_is_rendered_and_answered(client):
    short = client.chat.completions.create(
        model=MODEL, messages=second_turn("21 C"), tools=TOOLS, tool_choice="none", max_tokens=30
    )
    longer = client.chat.completions.create(
        model=MODEL,
        messages=second_turn("21 C, sunny, light wind from the west, no rain expected until night"),
        tools=TOOLS,
        tool_choice="none",
        max_tokens=30,
    )
    assert short.choices[0].message.content and longer.choices[0].message.content
    # The tool's result is in the prompt: a longer result, a longer prompt.
    assert longer.usage.prompt_tokens >= short.usage.prompt_tokens + 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "names the tool 'nope'",
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "1-64 letters"),
        (
            {"tools": [tool("big", "", {"s": {"type": "string", "maxLength": 50000}}, ["s"])]},
            "maxLength",
        ),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "cannot be combined"),
    ],
)
def test_bad_tools_are_a_400_that_says_what(client, kwargs, message):
    kwargs.setdefault("tools", TOOLS)
    with pytest.raises(openai.BadRequestError, match=message) as error:
        ask(client, "Hi", **kwargs)
    assert error.value.status_code == 400


class Flight(BaseModel):
    origin: str
    destination: str
    passengers: int


def test_pydantic_ai_gets_structured_output_through_a_forced_call(server):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    async def run() -> Any:
        # Our own client, closed when done: the provider's would leave its
        # connection to the server open.
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused") as http:
            provider = OpenAIProvider(openai_client=http)
            agent = Agent(OpenAIChatModel(MODEL, provider=provider), output_type=Flight)
            return await agent.run(
                "Two people fly from Oslo to Rome.",
                model_settings={"temperature": 0, "max_tokens": 200},
            )

    result = asyncio.run(run())
    assert isinstance(result.output, Flight)
    assert isinstance(result.output.passengers, int)
