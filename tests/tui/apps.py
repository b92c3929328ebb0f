"""The dashboard as the pilot tests build it: a ShimmyApp over a real manager and
server, and the embedded server's URL once the app has started it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shimmy.api.server_control import ServerControl
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp


def make_app(manager: ModelManager, server: ServerControl, **kwargs: Any) -> ShimmyApp:
    """The dashboard over the real manager; ``kwargs`` are ShimmyApp's own options."""
    return ShimmyApp(manager, server, **kwargs)


async def server_url(app: ShimmyApp, server: ServerControl, within: float = 30.0) -> str:
    """The embedded server's URL once it runs: the app starts it after its first
    frame, so a test must wait for that rather than for the workers of the moment."""
    deadline = time.monotonic() + within
    while server.url is None or not server.running:
        assert time.monotonic() < deadline, "the embedded server did not start"
        await asyncio.sleep(0.02)
    await app.workers.wait_for_complete()
    return server.url
