"""The Server tab's address: a rebind or start beyond this machine needs an API key
(or --insecure), as `shimmy serve` does; a refused one is shown and not served."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from textual.widgets import Button, Input, Static
from textual.widgets._toast import Toast

from shimmy.api.security import check_bind
from shimmy.api.server_control import ServerControl
from shimmy.config import Settings
from shimmy.errors import ShimmyError
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp
from tests.tui.apps import make_app
from tests.waiting import settle

pytestmark = pytest.mark.anyio


@pytest.fixture
def refusal() -> str:
    """What `shimmy serve --bind 0.0.0.0` without a key says (less its "error: ")."""
    with pytest.raises(ShimmyError) as refused:
        check_bind("0.0.0.0", (), False)
    return f"{refused.value.message} ({refused.value.details})"


@contextmanager
def managed(**settings: Any) -> Iterator[ModelManager]:
    """A real manager with these settings (the test asks for ``isolated_home``)."""
    manager = ModelManager(Settings(keep_alive=-1, preload=False, **settings))
    try:
        yield manager
    finally:
        manager.close()


def state_text(app: ShimmyApp) -> str:
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(app.query_one("#server-state", Static).content)
    return " ".join(console.export_text().split())


def toasts(app: ShimmyApp) -> list[str]:
    return [" ".join(t.render().plain.split()) for t in app.screen.query(Toast)]


def serving(app: ShimmyApp, server: ServerControl) -> bool:
    """The server runs and the dashboard has been told (its title is the URL)."""
    return server.running and server.url is not None and str(app.sub_title) == server.url


async def start_on(app: ShimmyApp, pilot: Any, bind: str, outcome: Callable[[], bool]) -> None:
    """Type ``bind`` in the address field and press Start, as a user would, and let
    the dashboard run until ``outcome`` shows (Start posts a message, whose handler
    starts a worker, which posts the result back)."""
    app.query_one("#bind-input", Input).value = bind
    # A toast from the last attempt may lie over the button (a click on it
    # dismisses the toast instead): read them first, as a user would, and wait
    # until the spot the click lands on shows the button again.
    app.clear_notifications()
    button = app.query_one("#server-start", Button)
    await settle(
        pilot,
        lambda: app.get_widget_at(*button.region.offset)[0] is button,
        what="the Start button uncovered",
    )
    assert await pilot.click(button), "the click landed beside the Start button"
    await settle(pilot, outcome, what=f"the outcome of starting on {bind}")


async def test_rebind_to_all_interfaces_without_a_key_is_refused(
    isolated_home: Path, refusal: str
) -> None:
    with managed() as manager:
        server = ServerControl(manager, "127.0.0.1", 0)
        app = make_app(manager, server, serve=False, initial_tab="server", stats_interval=0)
        try:
            async with app.run_test(size=(160, 40), notifications=True) as pilot:
                await pilot.pause()
                await start_on(
                    app, pilot, "0.0.0.0:0", lambda: any(refusal in t for t in toasts(app))
                )
                assert not server.running and server.url is None
                assert (server.host, server.port) == ("127.0.0.1", 0)  # the old address kept
                assert server.error == refusal
                assert "Refusing to listen on 0.0.0.0 without an API key" in refusal
                assert refusal in state_text(app)  # shown in the pane...
                assert sum(refusal in t for t in toasts(app)) == 1  # ...and said once
                assert "not running" in str(app.sub_title)
                # A malformed address is refused the same way.
                bad_port = "Bad port in --bind '127.0.0.1:notaport'"
                await start_on(
                    app, pilot, "127.0.0.1:notaport", lambda: bad_port in state_text(app)
                )
                assert not server.running and server.port == 0
                # Start again: the address it kept still works.
                app.query_one("#request-log").focus()
                await pilot.press("s")
                await settle(pilot, lambda: serving(app, server))
                assert server.host == "127.0.0.1"
                await pilot.press("ctrl+q")
        finally:
            server.stop()


@pytest.mark.parametrize(
    "settings", [{"api_keys": ("secret",)}, {"insecure": True}], ids=["key", "insecure"]
)
async def test_rebind_to_all_interfaces_with_a_key_or_insecure_is_allowed(
    isolated_home: Path, settings: dict[str, Any]
) -> None:
    with managed(**settings) as manager:
        server = ServerControl(manager, "127.0.0.1", 0)
        app = make_app(manager, server, serve=False, initial_tab="server", stats_interval=0)
        try:
            async with app.run_test(size=(160, 40)) as pilot:
                await pilot.pause()
                await start_on(
                    app, pilot, "0.0.0.0:0", lambda: serving(app, server) or bool(server.error)
                )
                assert server.running and server.host == "0.0.0.0", server.error
                assert server.error is None and server.url is not None
                url = "http://127.0.0.1:" + server.url.rsplit(":", 1)[1]
                health = await asyncio.to_thread(httpx.get, url + "/api/health", timeout=10)
                assert health.status_code == 200
                models = await asyncio.to_thread(httpx.get, url + "/api/models", timeout=10)
                assert models.status_code == (401 if "api_keys" in settings else 200)
                await pilot.press("ctrl+q")
            assert not server.running
        finally:
            server.stop()


def test_start_and_rebind_apply_the_check(isolated_home: Path, refusal: str) -> None:
    """Whatever calls them: an address given at construction, or a rebind."""
    with managed() as manager:
        server = ServerControl(manager, "0.0.0.0", 0)
        with pytest.raises(ShimmyError) as refused:
            server.start()
        assert refused.value.message in refusal and refusal == server.error
        assert not server.running
        server = ServerControl(manager, "127.0.0.1", 0)
        with pytest.raises(ShimmyError):
            server.rebind("[::]:0")
        assert (server.host, server.port) == ("127.0.0.1", 0)
        assert server.error is not None and "Refusing to listen on :: " in server.error
        server.rebind("localhost:0")  # loopback needs no key
        assert server.host == "localhost"
