"""A stand-in for ModelManager with just the chat surface the Anthropic and
Responses dialects use: it records what reached it and answers with a
generation made of the pieces a test sets, so shapes, event sequences and
error paths can be pinned down without a model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from dataclasses import replace
from typing import Any

from shimmy.config import Settings
from shimmy.errors import ShimmyError, model_not_found
from shimmy.models.generation import Generation, GenerationRequest

MODEL = "fake-model"


class FakeManager:
    """Records each submission; answers with ``pieces`` (finished with ``reason``
    or ``generation_error``), or with ``live`` (unfinished) when set."""

    def __init__(self) -> None:
        self.settings = Settings(max_tokens_limit=500)
        self.calls: list[dict[str, Any]] = []
        self.pieces: list[str] = ["Hello", ",", " world"]
        self.reason = "stop"
        self.stop_string: str | None = None  # the stop string that "ended" the reply
        self.cached_tokens = 0
        self.error: ShimmyError | None = None  # raised by submit
        self.generation_error: ShimmyError | None = None  # ends the generation
        self.live: Generation | None = None
        self.tool_format = "hermes"  # the format the fake model writes calls in

    def resolve(self, name: str | None) -> Any:
        if name not in (MODEL, "default", None):
            raise model_not_found(name or "")

    def submit_chat(self, name: str | None, messages: Any, **kwargs: Any) -> Generation:
        self.resolve(name)
        self.calls.append({"model": name, "messages": messages, **kwargs})
        if self.error is not None:
            raise self.error
        if self.live is not None:
            return self.live
        tools = kwargs.get("tools")
        if tools is not None:  # the real manager sets the model's format
            tools = replace(tools, format=self.tool_format)
        generation = Generation(GenerationRequest(prompt_tokens=[1, 2, 3, 4], tools=tools), MODEL)
        generation.cached_tokens = self.cached_tokens
        for text in self.pieces:
            generation.emit(text, 7)
        generation.stop_string = self.stop_string
        error = self.generation_error
        generation.finish("error" if error else self.reason, error)
        return generation

    def count_chat_tokens(self, name: str | None, messages: Any, **kwargs: Any) -> int:
        self.resolve(name)
        self.calls.append({"model": name, "messages": messages, **kwargs})
        return len(json.dumps(messages))


class RecordingSend:
    """An ASGI ``send`` that keeps every message it was given."""

    def __init__(self) -> None:
        self.sent: list[MutableMapping[str, Any]] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent)


# A Hermes reply with text, then two calls, its markers split across pieces.
HERMES_REPLY = [
    "Checking.",
    "\n<tool_",
    'call>\n{"name": "get_weather", "argu',
    'ments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", ',
    '"arguments": {"city": "Rome"}}\n</tool_',
    "call>",
]


def asgi_post(
    path: str, body: dict[str, Any]
) -> tuple[dict[str, Any], Any, RecordingSend, asyncio.Event]:
    """An ASGI scope, receive and send for a POST whose client leaves when the
    returned event is set (until then ``receive`` waits, as a connected client's does)."""
    raw = json.dumps(body).encode()
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    return scope, receive, RecordingSend(), gone
