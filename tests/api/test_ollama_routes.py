"""Ollama's routes over a fake manager: hostile bodies refused with Ollama's 400
before any model is touched, the NDJSON lines of a stream (an error as the last
line), tool calls as whole objects, keep_alive durations, the listener's
address and its error shapes.

The real model, Ollama's own client and LangChain are in tests/e2e/test_ollama.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shimmy.api.address import ollama_bind
from shimmy.api.app import create_ollama_app
from shimmy.api.dialects.ollama.errors import ollama_error_body
from shimmy.api.dialects.ollama.routes import build_router
from shimmy.api.dialects.ollama.schemas import FOREVER, keep_alive_seconds
from shimmy.api.errors import install_error_handlers
from shimmy.config import DEFAULT_OLLAMA_PORT, Settings, load_settings
from shimmy.errors import ShimmyError, model_not_found
from shimmy.models.generation import Generation, GenerationRequest
from shimmy.models.tools import ToolRequest

MODEL = "fake-model"

Http = Callable[..., httpx.Response]


class FakeManager:
    """The surface of ModelManager that Ollama's generating routes use."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / "fake-model.gguf"
        path.write_bytes(b"GGUF")
        self.settings = Settings(max_tokens_limit=500, max_body_bytes=4096)
        self.entry = SimpleNamespace(name=MODEL, path=path, usable=True, error=None)
        self.registry = SimpleNamespace(resolve=self._resolve)
        self.calls: list[dict[str, Any]] = []
        self.pieces = ["Hello", ",", " world"]
        self.error: ShimmyError | None = None  # ends the generation
        self.tool_format = "hermes"

    def _resolve(self, name: str) -> Any:
        if name == MODEL:
            return self.entry
        raise model_not_found(name)

    def engine(self, name: str, *, keep_alive: float | None = None) -> None:
        self.calls.append({"engine": name, "keep_alive": keep_alive})

    def unload(self, name: str) -> bool:
        self.calls.append({"unload": name})
        return True

    def add_finish_listener(self, listener: Any) -> None:
        pass

    def stats(self) -> Any:  # what /metrics reads
        return SimpleNamespace(loaded=[], rss_bytes=0)

    def _generation(self, **call: Any) -> Generation:
        self.calls.append(call)
        tools = call.get("tools")
        if tools is not None:
            tools = replace(tools, format=self.tool_format)
        generation = Generation(GenerationRequest(prompt_tokens=[1, 2, 3], tools=tools), MODEL)
        generation.started_at = generation.started_at or 0.0
        for text in self.pieces:
            generation.emit(text, 7)
        generation.finish("error" if self.error else "stop", self.error)
        return generation

    def submit_chat(self, name: str, messages: Any, **kwargs: Any) -> Generation:
        return self._generation(model=name, messages=messages, **kwargs)

    def submit_prompt(self, name: str, prompt: str, **kwargs: Any) -> Generation:
        return self._generation(model=name, prompt=prompt, **kwargs)


@pytest.fixture
def manager(tmp_path: Path) -> FakeManager:
    return FakeManager(tmp_path)


@pytest.fixture
def run() -> Iterator[Callable[[Any], Any]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def client_of(app: FastAPI, run: Callable[[Any], Any]) -> Iterator[Http]:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    yield lambda method, url, **kw: run(client.request(method, url, **kw))
    run(client.aclose())


@pytest.fixture
def http(manager: FakeManager, run: Callable[[Any], Any]) -> Iterator[Http]:
    app = FastAPI()
    install_error_handlers(app, ollama_error_body)
    app.include_router(build_router(manager))  # type: ignore[arg-type]
    yield from client_of(app, run)


@pytest.fixture
def listener(manager: FakeManager, run: Callable[[Any], Any]) -> Iterator[Http]:
    """The whole Ollama listener's app: guards, limits and the /v1 dialects too."""
    yield from client_of(create_ollama_app(manager), run)  # type: ignore[arg-type]


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **extra}


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


# -- hostile bodies ---------------------------------------------------------------

HOSTILE: list[tuple[str, Any, str]] = [
    ("/api/chat", b"{oops", "JSON"),
    ("/api/chat", b"", "missing request body"),
    ("/api/chat", b"[1, 2]", "object"),
    ("/api/chat", {"messages": []}, "model"),
    ("/api/chat", chat_body(model="x" * 301), "300"),
    ("/api/chat", chat_body(model=7), "string"),
    ("/api/chat", chat_body(stream="maybe"), "stream"),
    ("/api/chat", chat_body(options={"temperature": -1}), "temperature"),
    ("/api/chat", b'{"model": "fake-model", "options": {"temperature": NaN}}', "temperature"),
    ("/api/chat", b'{"model": "fake-model", "options": {"top_p": Infinity}}', "top_p"),
    ("/api/chat", chat_body(options={"top_k": 10**20}), "top_k"),
    ("/api/chat", chat_body(options={"repeat_last_n": 10**12}), "repeat_last_n"),
    ("/api/chat", chat_body(options={"repeat_last_n": -5}), "repeat_last_n"),
    ("/api/chat", chat_body(options={"seed": 10**30}), "seed"),
    ("/api/chat", chat_body(options={"num_predict": -7}), "num_predict"),
    ("/api/chat", chat_body(options={"stop": ["x"] * 17}), "stop"),
    ("/api/chat", chat_body(options={"stop": ["x" * 501]}), "stop"),
    ("/api/chat", chat_body(options="hot"), "options"),
    ("/api/chat", chat_body(format="yaml"), 'format must be "json" or a JSON schema'),
    ("/api/chat", chat_body(keep_alive="soon"), "invalid duration"),
    ("/api/chat", chat_body(keep_alive="5m" * 40), "at most 64"),
    ("/api/chat", chat_body(keep_alive=True), "keep_alive"),
    ("/api/chat", chat_body(think=True), "thinking is not supported"),
    ("/api/chat", chat_body(think="high"), "thinking is not supported"),
    ("/api/chat", chat_body(logprobs=True), "logprobs are not supported"),
    (
        "/api/chat",
        chat_body(messages=[{"role": "user", "content": "Hi", "images": ["aGk="]}]),
        "images are not supported",
    ),
    ("/api/chat", chat_body(messages=[{"role": "wizard", "content": "Hi"}]), "role"),
    ("/api/chat", chat_body(messages=[{"content": "Hi"}]), "role"),
    ("/api/chat", chat_body(messages="Hi"), "messages"),
    (
        "/api/chat",
        chat_body(tools=[{"type": "function", "function": {"name": "a b"}}]),
        "letters, digits",
    ),
    (
        "/api/chat",
        chat_body(tools=[{"type": "retrieval", "function": {"name": "a"}}]),
        "function",
    ),
    (
        "/api/chat",
        chat_body(
            tools=[{"type": "function", "function": {"name": "a"}}],
            format="json",
        ),
        "format cannot be combined with tools",
    ),
    ("/api/generate", {"model": MODEL, "prompt": "x", "suffix": "y"}, "suffix"),
    ("/api/generate", {"model": MODEL, "prompt": "x", "images": ["aGk="]}, "images"),
    ("/api/generate", {"model": MODEL, "prompt": "x", "template": "{{ .Prompt }}"}, "template"),
    ("/api/generate", {"model": MODEL, "prompt": "x", "context": [1, 2]}, "context"),
    ("/api/generate", {"model": MODEL, "prompt": "x", "raw": True, "system": "s"}, "raw"),
    ("/api/generate", {"model": MODEL, "prompt": ["x"]}, "prompt"),
    ("/api/embed", {"model": MODEL, "input": ["a"] * 2049}, "2048"),
    ("/api/embed", {"model": MODEL, "input": "a", "dimensions": 0}, "dimensions"),
    ("/api/embed", {"model": MODEL, "input": 5}, "input"),
    ("/api/embeddings", {"model": MODEL, "prompt": 5}, "prompt"),
    ("/api/show", {}, "model is required"),
    ("/api/show", {"model": "   "}, "model is required"),
    ("/api/show", {"model": "x" * 301}, "300"),
    ("/api/pull", {"model": "hf.co/" + "x" * 400}, "300"),
    ("/api/pull", {"model": "llama3.2"}, "Hugging Face only"),
    ("/api/copy", {"source": MODEL}, "destination"),
    ("/api/copy", {"source": MODEL, "destination": "x" * 301}, "300"),
    ("/api/delete", {"model": ""}, "model is required"),
]


@pytest.mark.parametrize(
    "path, body, said", HOSTILE, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(HOSTILE)]
)
def test_hostile_bodies_are_ollamas_400_and_touch_no_model(http, manager, path, body, said):
    sent = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = http("POST", path, **sent)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and said in error
    assert "Traceback" not in error and len(error) < 1000
    assert manager.calls == []


def test_an_unknown_model_is_404_in_ollamas_words(http, manager):
    for path, body in [
        ("/api/chat", chat_body(model="nope")),
        ("/api/generate", {"model": "nope:latest", "prompt": "Hi"}),
        ("/api/chat", {"model": "nope", "messages": []}),
    ]:
        response = http("POST", path, json=body)
        assert response.status_code == 404
        assert response.json() == {"error": "model 'nope' not found"} or response.json() == {
            "error": "model 'nope:latest' not found"
        }
    assert manager.calls == []


def test_create_push_and_blobs_are_501(http):
    for method, path in [
        ("POST", "/api/create"),
        ("POST", "/api/push"),
        ("HEAD", "/api/blobs/sha256:" + "0" * 64),
        ("POST", "/api/blobs/sha256:" + "0" * 64),
    ]:
        response = http(method, path, json={"model": "x"})
        assert response.status_code == 501
        if method == "POST":
            assert "not supported by shimmy" in response.json()["error"]


# -- what reaches the manager -------------------------------------------------------


def test_options_keep_alive_and_format_reach_the_manager(http, manager):
    body = chat_body(
        stream=False,
        format={"type": "object", "properties": {"a": {"type": "integer"}}},
        keep_alive="1h30m",
        options={"temperature": 0, "top_k": 5, "seed": -1, "num_predict": 9, "stop": ["\n"]},
    )
    response = http("POST", "/api/chat", json=body)
    assert response.status_code == 200, response.text
    engine, call = manager.calls
    assert engine == {"engine": MODEL, "keep_alive": 5400.0}
    assert call["max_tokens"] == 9 and call["stop"] == ("\n",)
    assert call["keep_alive"] == 5400.0 and call["grammar"]
    sampling = call["sampling"]
    # Ollama's defaults under what was asked; seed -1 is a random seed.
    assert (sampling.temperature, sampling.top_k, sampling.top_p) == (0, 5, 0.9)
    assert sampling.seed is None
    assert response.json()["message"] == {"role": "assistant", "content": "Hello, world"}


def test_num_predict_none_or_negative_is_the_servers_limit(http, manager):
    for predict in (None, -1, -2, 0, 10_000):
        manager.calls.clear()
        body = chat_body(stream=False, options={"num_predict": predict})
        assert http("POST", "/api/chat", json=body).status_code == 200
        assert manager.calls[-1]["max_tokens"] == 500


def test_generate_with_a_system_prompt_is_a_chat(http, manager):
    body = {"model": MODEL, "prompt": "Hi", "system": "Be brief.", "stream": False}
    response = http("POST", "/api/generate", json=body)
    assert response.json()["response"] == "Hello, world"
    assert manager.calls[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_an_empty_request_loads_and_keep_alive_zero_unloads(http, manager):
    load = http("POST", "/api/generate", json={"model": MODEL, "keep_alive": -1}).json()
    assert (load["done"], load["done_reason"], load["response"]) == (True, "load", "")
    unload = http("POST", "/api/chat", json={"model": MODEL, "keep_alive": 0}).json()
    assert (unload["done_reason"], unload["message"]["content"]) == ("unload", "")
    assert manager.calls == [{"engine": MODEL, "keep_alive": FOREVER}, {"unload": MODEL}]


# -- streams ------------------------------------------------------------------------


def test_a_stream_is_ndjson_ending_with_done(http):
    lines = ndjson(http("POST", "/api/chat", json=chat_body()))
    assert [line["message"]["content"] for line in lines] == ["Hello", ",", " world", ""]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] == 3
    generated = ndjson(http("POST", "/api/generate", json={"model": MODEL, "prompt": "Hi"}))
    assert "".join(line["response"] for line in generated) == "Hello, world"
    assert generated[-1]["done"] is True and generated[-1]["prompt_eval_count"] == 3


def test_an_error_mid_stream_is_the_last_line(http, manager):
    manager.error = ShimmyError("generation_failed", "llama_decode failed")
    lines = ndjson(http("POST", "/api/chat", json=chat_body()))
    assert lines[-1] == {"error": "llama_decode failed"}
    assert all("error" not in line for line in lines[:-1])
    whole = http("POST", "/api/chat", json=chat_body(stream=False))
    assert whole.status_code == 500 and whole.json() == {"error": "llama_decode failed"}


def test_tool_calls_come_whole_with_object_arguments(http, manager):
    manager.pieces = ['<tool_call>\n{"name": "get_weather", ', '"arguments": {"city": "Paris"}}']
    manager.pieces.append("\n</tool_call>")
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    lines = ndjson(http("POST", "/api/chat", json=chat_body(tools=[tool])))
    calls = [c for line in lines for c in line["message"].get("tool_calls", ())]
    assert [c["function"] for c in calls] == [
        {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    ]
    assert "".join(line["message"]["content"] for line in lines) == ""
    whole = http("POST", "/api/chat", json=chat_body(tools=[tool], stream=False)).json()
    assert [c["function"]["arguments"] for c in whole["message"]["tool_calls"]] == [
        {"city": "Paris"}
    ]
    assert isinstance(manager.calls[-1]["tools"], ToolRequest)


# -- keep_alive -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        (None, None),
        ("", None),
        (0, 0.0),
        ("0", 0.0),
        (-1, FOREVER),
        ("-1m", FOREVER),
        (30, 30.0),
        (2.5, 2.5),
        ("90", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("1.5h", 5400.0),
        (1e308, FOREVER),
        ("1e308", FOREVER),
        ("2562047h", FOREVER),
    ],
)
def test_keep_alive_takes_seconds_and_go_durations(value, seconds):
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 m", "5mm", "m", "1d", "nan", "--5m"])
def test_keep_alive_refuses_what_is_no_duration(value):
    with pytest.raises(ValueError):
        keep_alive_seconds(value)


# -- the listener --------------------------------------------------------------------


def test_the_ollama_address_setting(monkeypatch, tmp_path):
    assert ollama_bind("") is None and ollama_bind("off") is None
    assert ollama_bind("on") == ("127.0.0.1", DEFAULT_OLLAMA_PORT)
    assert ollama_bind("127.0.0.1:11434") == ("127.0.0.1", 11434)
    assert ollama_bind("localhost") == ("localhost", DEFAULT_OLLAMA_PORT)
    assert ollama_bind(":9000") == ("127.0.0.1", 9000)
    assert ollama_bind("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ShimmyError) as bad:
        ollama_bind("127.0.0.1:port")
    assert str(bad.value.message) == "Bad port in --ollama '127.0.0.1:port'"
    monkeypatch.setenv("SHIMMY_HOME", str(tmp_path))
    monkeypatch.setenv("SHIMMY_OLLAMA", "127.0.0.1:12000")
    assert load_settings().ollama == "127.0.0.1:12000"
    assert load_settings(ollama="on").ollama == "on"  # a flag wins


def test_the_listener_answers_in_ollamas_shape_but_v1_in_openais(listener):
    assert listener("GET", "/").text == "Ollama is running"
    assert listener("HEAD", "/").status_code == 200
    assert listener("GET", "/api/version").json()["version"].count(".") == 2
    too_big = listener("POST", "/api/chat", content=b"x" * 5000)
    assert too_big.status_code == 413 and isinstance(too_big.json()["error"], str)
    foreign = listener("GET", "/api/version", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and isinstance(foreign.json()["error"], str)
    bad = listener("POST", "/v1/chat/completions", json={"model": MODEL})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    # shimmy's native API is not here: its /api/generate has another shape.
    assert listener("GET", "/api/health").status_code == 404
    assert listener("GET", "/api/models").status_code == 404
