"""The Server tab's Ollama listener: started with the dashboard when asked, shown
with its URL, switched off and on, and a port it cannot take reported without
ending anything (a real Ollama may hold 11434)."""

from __future__ import annotations

import asyncio
import io
import socket
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from textual.widgets import Static, Switch
from textual.widgets._toast import Toast

from shimmy.api.server_control import ServerControl
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp
from tests.tui.apps import make_app, server_url
from tests.waiting import settle

pytestmark = pytest.mark.anyio

MODEL = "smollm2-135m-instruct-q4_1"


def toasts(app: ShimmyApp) -> list[str]:
    return [" ".join(t.render().plain.split()) for t in app.screen.query(Toast)]


def ollama_text(app: ShimmyApp) -> str:
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(app.query_one("#ollama-state", Static).content)
    return " ".join(console.export_text().split())


async def test_the_ollama_listener_serves_and_switches_off_and_on(
    manager: ModelManager, isolated_home: Path
) -> None:
    server = ServerControl(manager, "127.0.0.1", 0, ollama=("127.0.0.1", 0), ollama_on=True)
    ollama = server.ollama
    assert ollama is not None
    app = make_app(manager, server, initial_tab="server", stats_interval=0)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await server_url(app, server)
            await settle(pilot, lambda: ollama.running, what="the Ollama listener")
            url = ollama.url
            assert url is not None
            await settle(pilot, lambda: url in ollama_text(app), what="its URL shown")
            switch = app.query_one("#ollama-switch", Switch)
            assert switch.value is True
            tags = await asyncio.to_thread(httpx.get, url + "/api/tags", timeout=30)
            assert f"{MODEL}:latest" in {m["model"] for m in tags.json()["models"]}
            # One request log for both listeners: the Server tab lists it.
            endpoints = [r.endpoint for r in server.request_log.records()]
            assert "ollama: GET /api/tags" in endpoints, endpoints
            await pilot.press("o")
            await settle(pilot, lambda: not ollama.running, what="the listener stopped")
            await settle(pilot, lambda: not switch.value, what="the switch off")
            assert "Ollama API off (127.0.0.1:0)" in ollama_text(app)
            assert server.running  # the main API carries on
            await pilot.click(switch)
            await settle(pilot, lambda: ollama.running and switch.value, what="on again")
            await pilot.press("ctrl+q")
        assert not ollama.running and not server.running
    finally:
        server.stop()
        ollama.stop()


async def test_a_taken_ollama_port_is_reported_and_the_dashboard_carries_on(
    manager: ModelManager, isolated_home: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServerControl(manager, "127.0.0.1", 0, ollama=("127.0.0.1", port), ollama_on=True)
        ollama = server.ollama
        assert ollama is not None
        app = make_app(manager, server, initial_tab="server", stats_interval=0)
        try:
            async with app.run_test(size=(160, 40), notifications=True) as pilot:
                said = f"Port {port} on 127.0.0.1 is already in use"
                await settle(pilot, lambda: said in ollama_text(app), what="the error shown")
                assert "not served" in ollama_text(app) and "--ollama HOST:PORT" in (
                    ollama.error or ""
                )
                await settle(
                    pilot, lambda: any(said in t for t in toasts(app)), what="a notification"
                )
                await server_url(app, server)
                assert not app.query_one("#ollama-switch", Switch).value
                assert server.running and not ollama.running
                await pilot.press("ctrl+q")
        finally:
            server.stop()
            ollama.stop()
