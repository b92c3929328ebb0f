"""Fixtures for the dashboard's tests: a real manager over an isolated home, and apps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shimmy.api.server_control import ServerControl
from shimmy.config import Settings
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp

MODEL = "smollm2-135m-instruct-q4_1"


@pytest.fixture
def manager(isolated_home: Path) -> Iterator[ModelManager]:
    """A real manager; discovery finds SmolLM2 in its Python distribution (source 7)."""
    manager = ModelManager(Settings(keep_alive=-1, ctx_size=1024, preload=False))
    yield manager
    manager.close()


@pytest.fixture
def server(manager: ModelManager) -> Iterator[ServerControl]:
    control = ServerControl(manager, "127.0.0.1", 0)
    yield control
    control.stop()


def make_app(manager: ModelManager, server: ServerControl, **kwargs: Any) -> ShimmyApp:
    """The dashboard over the real manager; ``kwargs`` are ShimmyApp's own options."""
    return ShimmyApp(manager, server, **kwargs)


@pytest.fixture
def anyio_backend() -> str:
    """Pilot tests are coroutines; anyio's pytest plugin runs them on asyncio."""
    return "asyncio"


async def server_url(app: ShimmyApp, server: ServerControl, within: float = 30.0) -> str:
    """The embedded server's URL once it runs: the app starts it after its first
    frame, so a test must wait for that rather than for the workers of the moment."""
    import asyncio
    import time

    deadline = time.monotonic() + within
    while server.url is None or not server.running:
        assert time.monotonic() < deadline, "the embedded server did not start"
        await asyncio.sleep(0.02)
    await app.workers.wait_for_complete()
    return server.url
