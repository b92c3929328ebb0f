"""The dashboard as a whole: the embedded server, quitting, help, themes, palette."""

from __future__ import annotations

import asyncio
import socket
from functools import partial
from pathlib import Path

import httpx
import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import Input, TabbedContent

from shimmy.api.server_control import ServerControl
from shimmy.models.manager import ModelManager
from shimmy.tui.app import DARK_THEME, LIGHT_THEME, ShimmyApp
from shimmy.tui.help_screen import HelpScreen
from tests.tui.apps import make_app, server_url
from tests.waiting import settle

pytestmark = pytest.mark.anyio


def serving(app: ShimmyApp, server: ServerControl) -> bool:
    """The server runs and the dashboard has been told (its title is the URL)."""
    return server.running and server.url is not None and str(app.sub_title) == server.url


async def test_server_answers_while_running_and_not_after_quit(
    manager: ModelManager, server: ServerControl
) -> None:
    app = make_app(manager, server)
    async with app.run_test() as pilot:
        url = await server_url(app, server)
        # The worker's message reaches the title after the worker is done.
        await settle(pilot, lambda: url in str(app.sub_title), what="the URL as the title")
        # An HTTP client in another thread, as other programs would call it.
        response = await asyncio.to_thread(httpx.get, url + "/api/health")
        assert response.status_code == 200
        assert response.json()["status"] == "healthy"
        await pilot.press("ctrl+q")
    assert app.return_value == 0
    assert not server.running
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/api/health", timeout=2)


async def test_port_in_use_still_opens_and_can_move(manager: ModelManager) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    server = ServerControl(manager, "127.0.0.1", port)
    app = make_app(manager, server, initial_tab="server")
    try:
        async with app.run_test() as pilot:
            await settle(pilot, lambda: "not running" in str(app.sub_title), what="the refusal")
            assert not server.running
            assert server.error is not None and "already in use" in server.error
            field = app.query_one("#bind-input", Input)
            field.value = "127.0.0.1:0"
            await pilot.click("#server-start")
            # The click posts a message whose handler starts the worker: wait for
            # the outcome itself rather than for workers that may not exist yet.
            await settle(pilot, lambda: serving(app, server), what="the moved server")
            await pilot.press("ctrl+q")
    finally:
        taken.close()
        server.stop()


async def test_no_server_and_start_stop_by_key(
    manager: ModelManager, server: ServerControl
) -> None:
    app = make_app(manager, server, serve=False, initial_tab="server")
    async with app.run_test() as pilot:
        await pilot.pause()
        assert not server.running
        assert app.sub_title == "server off"
        app.query_one("#request-log").focus()
        await pilot.press("s")
        await settle(pilot, lambda: serving(app, server), what="the started server")
        await pilot.press("s")
        await settle(pilot, lambda: not server.running and app.sub_title == "server off")


async def test_help_theme_tabs_and_palette(manager: ModelManager, server: ServerControl) -> None:
    app = make_app(manager, server, serve=False)
    async with app.run_test() as pilot:
        await pilot.press("f1")
        shown = app.screen  # a name of its own: mypy would keep app.screen narrowed past escape
        assert isinstance(shown, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.theme == DARK_THEME
        await pilot.press("ctrl+t")
        assert app.theme == LIGHT_THEME
        for key, tab in (("f3", "chat"), ("f4", "server"), ("f5", "log"), ("f2", "models")):
            await pilot.press(key)
            assert app.query_one("#tabs", TabbedContent).active == tab
        # The palette reaches the dashboard's own actions.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to the chat tab")
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        # The palette searches in a worker: wait for the command to be listed.
        await settle(pilot, lambda: palette.query_one(CommandList).option_count > 0)
        await pilot.press("enter")
        await settle(pilot, lambda: app.query_one("#tabs", TabbedContent).active == "chat")
        # Every bound action is there (test_keys.py compares them one by one).
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Go to the Models tab", "Start / stop the API server", "Clear the log"} <= titles


async def test_server_tab_shows_whether_auth_is_on(isolated_home: Path) -> None:
    import io
    import re

    from rich.console import Console
    from textual.widgets import Static

    from shimmy.config import Settings

    def state_text(app: ShimmyApp) -> str:
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(app.query_one("#server-state", Static).content)
        return console.export_text()

    for keys, expected in (((), r"auth\s+none"), (("secret",), r"auth\s+API key required")):
        manager = ModelManager(Settings(keep_alive=-1, preload=False, api_keys=keys))
        control = ServerControl(manager, "127.0.0.1", 0)
        try:
            app = make_app(manager, control, initial_tab="server")
            async with app.run_test(size=(120, 40)) as pilot:
                await settle(pilot, partial(serving, app, control))
                assert re.search(expected, state_text(app)), state_text(app)
                if keys:  # and the embedded server really wants the key
                    url = control.url
                    assert url is not None
                    r = await asyncio.to_thread(httpx.get, url + "/api/models")
                    assert r.status_code == 401
                await pilot.press("ctrl+q")
        finally:
            control.stop()
            manager.close()
