"""The dashboard as the pilot tests build it: a ShimmyApp over a real manager and
server, and the embedded server's URL once the app has started it."""

from __future__ import annotations

from typing import Any

from shimmy.api.server_control import ServerControl
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp
from tests.waiting import eventually_async


def make_app(manager: ModelManager, server: ServerControl, **kwargs: Any) -> ShimmyApp:
    """The dashboard over the real manager; ``kwargs`` are ShimmyApp's own options."""
    return ShimmyApp(manager, server, **kwargs)


async def server_url(app: ShimmyApp, server: ServerControl, within: float = 30.0) -> str:
    """The embedded server's URL once it runs: the app starts it after its first
    frame, so a test must wait for that rather than for the workers of the moment."""
    await eventually_async(
        lambda: server.running and server.url is not None, within, what="the embedded server"
    )
    await app.workers.wait_for_complete()
    url = server.url
    assert url is not None  # set before the server runs, and kept while it does
    return url
