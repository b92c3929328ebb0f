"""Fixtures for the dashboard's tests: a real manager over an isolated home, its server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shimmy.api.server_control import ServerControl
from shimmy.config import Settings
from shimmy.models.manager import ModelManager


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


@pytest.fixture
def anyio_backend() -> str:
    """Pilot tests are coroutines; anyio's pytest plugin runs them on asyncio."""
    return "asyncio"
