"""Handing a request to the manager without blocking the event loop, and without
working on for a client that has left.

Submitting blocks: it may load a model, render the model's chat template
(which comes from a stranger's file, so it is bounded in time and can be
stopped) and tokenize. While it runs, this listens for the client to go away;
if it does, the render is told to stop (``cancel``) and a generation that still
came back is cancelled before it decodes anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation

log = logging.getLogger(__name__)

Submit = Callable[[threading.Event], Generation]


class ClientGone(Exception):
    """The client left before its request was queued; nothing is left running."""


async def _http_disconnect(receive: Receive) -> None:
    # The body has been read whole, so the next message is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


async def submit_while_connected(receive: Receive, submit: Submit) -> Generation:
    """``submit(cancel)`` in a worker thread, while the HTTP client is connected.

    Raises ``ClientGone`` if the client disconnected first (``cancel`` is then
    set, and any generation that came back anyway is cancelled), or whatever
    ``ShimmyError`` ``submit`` raised.
    """
    cancel = threading.Event()
    work = asyncio.ensure_future(run_in_threadpool(submit, cancel))
    gone = asyncio.ensure_future(_http_disconnect(receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not gone.done():
            gone.cancel()
    if work.done():
        return work.result()
    cancel.set()
    log.info("client went away while its request was being prepared")
    try:
        generation = await work
    except ShimmyError:
        raise ClientGone from None
    generation.cancel()
    raise ClientGone
