"""The API core without a model: the disconnect watch in each phase of a request,
and the streamed response (the real server is in tests/e2e/test_disconnect.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from shimmy.api.core import ClientGone, EventStream, Watch, ndjson_line, sse_event
from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation, GenerationRequest
from tests.waiting import eventually_async

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def generation() -> Generation:
    return Generation(GenerationRequest(prompt_tokens=[1]), "m")


class Client:
    """A connected client; ``leave()`` makes the watch fire."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def disconnect(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def watch(self) -> Watch:
        return Watch(self.disconnect())

    def leave(self) -> None:
        self.gone.set()


async def test_leaving_while_prepared_stops_the_render_and_cancels_what_came_back() -> None:
    client = Client()
    watch = client.watch()
    rendering = threading.Event()
    made = generation()

    def submit(cancel: threading.Event) -> Generation:
        rendering.set()
        assert cancel.wait(10), "the render was never told to stop"
        return made  # a render that finished anyway

    task = asyncio.ensure_future(watch.submit(submit))
    await asyncio.to_thread(rendering.wait, 10)
    client.leave()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, 10)
    assert made.cancelled


async def test_a_submission_error_is_the_callers_to_report() -> None:
    watch = Client().watch()

    def submit(cancel: threading.Event) -> Generation:
        raise ShimmyError("model_not_found", "no such model")

    with pytest.raises(ShimmyError, match="no such model"):
        await watch.submit(submit)
    watch.close()


async def test_a_frame_that_does_not_stop_the_render_lets_it_finish() -> None:
    frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    watch = Watch(frames.get(), stops_render=lambda message: "cancel" in message["text"])
    released = threading.Event()
    made = generation()

    def submit(cancel: threading.Event) -> Generation:
        released.wait(10)
        assert not cancel.is_set()
        return made

    task = asyncio.ensure_future(watch.submit(submit))
    await frames.put({"type": "websocket.receive", "text": '{"prompt": "next"}'})
    await eventually_async(lambda: watch.fired, 10, what="the watch to see the frame")
    released.set()
    assert await asyncio.wait_for(task, 10) is made
    assert watch.fired and not made.cancelled


async def test_submit_all_cancels_the_queued_ones_when_a_later_one_fails() -> None:
    watch = Client().watch()
    first = generation()

    def refused(cancel: threading.Event) -> Generation:
        raise ShimmyError("server_busy", "busy")

    with pytest.raises(ShimmyError):
        await watch.submit_all([lambda cancel: first, refused])
    assert first.cancelled
    watch.close()


async def test_leaving_while_queued_cancels_before_any_token() -> None:
    client = Client()
    watch = client.watch()
    queued = [generation(), generation()]
    task = asyncio.ensure_future(watch.finish(queued))
    # Not synchronisation: 10 ms in which finish() must not return on its own.
    await asyncio.sleep(0.01)
    assert not task.done()
    client.leave()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, 10)
    assert all(g.cancelled for g in queued)


async def test_finish_returns_once_every_generation_ends_even_with_an_error() -> None:
    watch = Client().watch()
    ok, failed = generation(), generation()
    ok.finish("stop")
    failed.finish("error", ShimmyError("generation_failed", "boom"))
    await asyncio.wait_for(watch.finish([ok, failed]), 10)
    assert not ok.cancelled and not failed.cancelled
    watch.close()


async def _stream(made: Generation) -> AsyncIterator[str]:
    async for piece in made.stream():
        yield sse_event({"text": piece.text})
    yield ndjson_line({"done": True})


async def test_a_stream_ends_and_cancels_its_generation_when_the_client_leaves() -> None:
    client = Client()
    made = generation()
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    response = EventStream(_stream(made), watch=client.watch(), generations=[made])
    task = asyncio.ensure_future(response({"type": "http"}, client.disconnect, send))
    made.emit("Hi", 1)
    await eventually_async(
        lambda: any(b'"text":"Hi"' in m.get("body", b"") for m in sent), what="the piece sent"
    )
    client.leave()
    await asyncio.wait_for(task, 10)
    assert made.cancelled
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"cache-control"] == b"no-cache"


async def test_a_stream_whose_socket_is_closed_cancels_its_generation() -> None:
    client = Client()
    made = generation()

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("connection reset")

    response = EventStream(_stream(made), watch=client.watch(), generations=[made])
    task = asyncio.ensure_future(response({"type": "http"}, client.disconnect, send))
    made.emit("Hi", 1)
    await asyncio.wait_for(task, 10)
    assert made.cancelled


async def test_a_finished_stream_sends_every_event_and_ends_the_body() -> None:
    client = Client()
    made = generation()
    made.emit("Hi", 1)
    made.finish("stop")
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    response = EventStream(_stream(made), watch=client.watch(), generations=[made])
    await asyncio.wait_for(response({"type": "http"}, client.disconnect, send), 10)
    bodies = b"".join(m.get("body", b"") for m in sent[1:])
    assert bodies == b'data: {"text":"Hi"}\n\n{"done":true}\n'
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert not made.cancelled
