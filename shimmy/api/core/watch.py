"""Noticing that a client left, in every phase of its request, and stopping the
work done for it.

A request passes through three phases: preparing (resolving and maybe loading
the model, rendering its chat template, tokenizing: blocking, so off the event
loop), waiting (in the engine's queue, reading the prompt, decoding) and
answering (a stream of events, or one JSON body at the end). A client may leave
in any of them, and uvicorn does not stop a handler whose client left. So each
request has one :class:`Watch`: a future that finishes when the client is
gone, which every phase waits on beside its own work. When it fires first, the
template render is told to stop, a generation that came back anyway is
cancelled, and queued or running generations are cancelled (a queued one is
dropped before it ever takes a slot), then :class:`ClientGone` is raised.

For HTTP the future is the ``http.disconnect`` message: the body has been
read whole, so the next message is the disconnect. For a WebSocket it is the
next frame or the disconnect: any frame sent mid-generation stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Message, Receive, Send

from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation

log = logging.getLogger(__name__)
T = TypeVar("T")

Submit = Callable[[threading.Event], Generation]
"""Resolves, renders, tokenizes and queues one generation (blocking); the event
is set when the client left, to stop a chat template's render."""


class ClientGone(Exception):
    """The client left (or asked to stop) before its answer was complete; what was
    started for it has been cancelled."""


async def _http_disconnect(receive: Receive) -> Message:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message


def _always(_: Message) -> bool:
    return True


class Watch:
    """The one way a request notices that its client left (see the module docstring).

    ``stops_render`` says whether what fired should also stop a request still
    being prepared (a WebSocket frame that is not ``{"cancel": true}`` lets the
    preparation finish, and then stops the generation)."""

    def __init__(
        self, stop: Awaitable[Message], *, stops_render: Callable[[Message], bool] = _always
    ) -> None:
        self._stop: asyncio.Future[Message] = asyncio.ensure_future(stop)
        self._stops_render = stops_render
        self._handed_over = False

    @classmethod
    def http(cls, receive: Receive) -> Watch:
        """Watch an HTTP request whose body has been read."""
        return cls(_http_disconnect(receive))

    @property
    def fired(self) -> bool:
        """Whether the client has left (or, on a WebSocket, sent a frame)."""
        return self._stop.done() and not self._stop.cancelled()

    @property
    def message(self) -> Message | None:
        """What fired (the disconnect, or the frame), once it has."""
        return self._stop.result() if self.fired else None

    def close(self) -> None:
        """Stop watching (the request is answered)."""
        if not self._stop.done():
            self._stop.cancel()

    def hand_over(self) -> None:
        """A streamed response now owns this watch: :func:`watching` leaves it open
        and the response closes it after its last event."""
        self._handed_over = True

    async def _first(self, work: asyncio.Future[Any]) -> bool:
        """Wait for ``work`` or the stop, whichever comes first; true if ``work``
        finished (it wins a tie: its result is not thrown away)."""
        if not work.done():
            await asyncio.wait({work, self._stop}, return_when=asyncio.FIRST_COMPLETED)
        return work.done()

    async def submit(self, submit: Submit) -> Generation:
        """``submit(cancel)`` off the event loop while the client is there.

        Returns the queued generation; raises what ``submit`` raised, or
        ``ClientGone`` after stopping the render (``cancel``) and cancelling any
        generation that came back anyway."""
        cancel = threading.Event()
        work = asyncio.ensure_future(run_in_threadpool(submit, cancel))
        try:
            finished = await self._first(work)
        except asyncio.CancelledError:  # the handler itself was cancelled
            cancel.set()
            work.add_done_callback(_cancel_what_came_back)
            raise
        if finished or not self._stops_render(self._stop.result()):
            return await work
        cancel.set()
        log.info("client went away while its request was being prepared")
        try:
            generation = await work
        except ShimmyError:
            raise ClientGone from None
        generation.cancel()
        raise ClientGone

    async def submit_all(self, submits: Sequence[Submit]) -> list[Generation]:
        """:meth:`submit` each in turn; if one fails or the client leaves, the
        generations already queued are cancelled too."""
        generations: list[Generation] = []
        try:
            for submit in submits:
                generations.append(await self.submit(submit))
        except BaseException:
            cancel_all(generations)
            raise
        return generations

    async def run(self, work: Awaitable[T], generations: Sequence[Generation]) -> T:
        """``work`` (streaming or waiting for ``generations``) while the client is
        there. If the client leaves first (or sending fails because the connection
        is gone), ``generations`` are cancelled, queued or running, ``work`` is
        stopped and ``ClientGone`` is raised."""
        task = asyncio.ensure_future(work)
        try:
            if await self._first(task) and not _lost_connection(task):
                return task.result()
            cancel_all(generations)
            log.info("client went away: %d generation(s) cancelled", len(generations))
        finally:
            if not task.done():
                task.cancel()
                cancel_all(generations)
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        raise ClientGone

    async def finish(self, generations: Sequence[Generation]) -> None:
        """Wait until every generation has finished, however it finished (its
        error is the caller's to read); ``ClientGone`` if the client leaves first."""
        await self.run(wait_until_finished(generations), generations)

    async def send(
        self, events: AsyncIterator[bytes], send: Send, generations: Sequence[Generation]
    ) -> None:
        """Send ``events`` as the body chunks of a streamed response until they end;
        ``ClientGone`` if the client leaves first."""
        try:
            await self.run(_send_all(events, send), generations)
        finally:
            await _close(events)


@contextlib.asynccontextmanager
async def watching(request: Request) -> AsyncIterator[Watch]:
    """The watch of an HTTP request whose body has been read, closed when the
    handler returns (unless a streamed response took it over)."""
    watch = Watch.http(request.receive)
    try:
        yield watch
    finally:
        if not watch._handed_over:
            watch.close()


def cancel_all(generations: Sequence[Generation]) -> None:
    """Cancel every generation not finished yet."""
    for generation in generations:
        if not generation.done:
            generation.cancel()


async def wait_until_finished(generations: Sequence[Generation]) -> None:
    """Until every one of ``generations`` has finished, however it finished."""
    for generation in generations:
        try:
            async for _ in generation.stream():
                pass
        except ShimmyError:
            pass  # the generation keeps its error for the dialect to report


def _lost_connection(task: asyncio.Future[Any]) -> bool:
    """Whether the work failed because the connection is gone (a write to a closed
    socket), which is the client leaving too."""
    return task.done() and not task.cancelled() and isinstance(task.exception(), OSError)


def _cancel_what_came_back(work: asyncio.Future[Generation]) -> None:
    if not work.cancelled() and work.exception() is None:
        work.result().cancel()


async def _send_all(events: AsyncIterator[bytes], send: Send) -> None:
    async for chunk in events:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _close(events: AsyncIterator[bytes]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()
