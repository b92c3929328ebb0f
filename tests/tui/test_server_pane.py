"""The Server tab says what each figure counts: the server's time up beside the
process's, every reply (chat included) beside the API requests it lists."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from textual.widgets import DataTable, Static

from shimmy.tui.app import ShimmyApp
from shimmy.tui.messages import StatsUpdated
from tests.tui.fakes import STATS, FakeManager, FakeServer
from tests.waiting import settle

pytestmark = pytest.mark.anyio


def text_of(widget: Static) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


async def test_uptimes_and_request_counts_say_what_they_count() -> None:
    manager = FakeManager()
    app = ShimmyApp(manager, FakeServer(manager), stats_interval=0, initial_tab="server")
    async with app.run_test(size=(160, 48)) as pilot:
        state = app.query_one("#server-state", Static)
        await settle(pilot, lambda: "running" in text_of(state))
        app.post_message(StatsUpdated(STATS, 0))
        figures = app.query_one("#figures", Static)
        await settle(pilot, lambda: "tok/s now" in text_of(figures), timeout=10)
        live, server = text_of(figures), text_of(state)
        # One "uptime" each, named for what it times.
        assert "uptime" not in live and "uptime" not in server
        assert "serving for" in server and "12m 34s" in server  # the server's
        assert "shimmy up" in live  # the process's
        assert f"{STATS.totals.requests} (API + chat)" in live
        requests = app.query_one("#request-log", DataTable)
        assert "API requests (chat replies are not listed)" in str(requests.border_subtitle)
