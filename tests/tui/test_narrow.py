"""Narrow terminals (issue 15): at 90x30 and at 80x24, the classic size, every tab
keeps the keys that lead everywhere in its footer, F2-F6 reach every tab from
every tab, and the chat's model list keeps each name on one line."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Select, TabbedContent
from textual.widgets._select import SelectOverlay

from shimmy.tui.app import TABS, ShimmyApp
from tests.tui.fakes import ENTRIES, FakeManager, FakeServer
from tests.tui.test_markup import screen_text

pytestmark = pytest.mark.anyio

SIZES = [(90, 30), (80, 24)]
TAB_KEYS = {tab: f"f{i}" for i, tab in enumerate(TABS, start=2)}


def dashboard() -> ShimmyApp:
    manager = FakeManager()
    return ShimmyApp(manager, FakeServer(manager), serve=False, stats_interval=0)


async def show(pilot: Pilot[Any], tab: str) -> None:
    await pilot.press(TAB_KEYS[tab])
    await pilot.pause()
    assert pilot.app.query_one("#tabs", TabbedContent).active == tab


@pytest.mark.parametrize("size", SIZES)
async def test_every_tab_keeps_the_f_keys_in_its_footer(size: tuple[int, int]) -> None:
    app = dashboard()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for tab in (*TABS, "models"):  # each tab reached from the one before it
            await show(pilot, tab)
            footer = screen_text(app).splitlines()[-1]
            for hint in ("f1 Help", "f2-f6 Tabs", "^q Quit"):
                assert hint in footer, f"{tab}: {footer!r}"


@pytest.mark.parametrize("size", SIZES)
async def test_chat_model_list_keeps_names_on_one_line(size: tuple[int, int]) -> None:
    app = dashboard()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await show(pilot, "chat")
        select = app.query_one("#chat-model", Select)
        select.expanded = True
        await pilot.pause()
        overlay = select.query_one(SelectOverlay)
        usable = [e.name for e in ENTRIES if e.usable]
        assert overlay.option_count == 1 + len(usable)  # "default model" and each
        assert overlay.virtual_size.height == overlay.option_count  # a line each
        shown = screen_text(app)
        for name in usable:  # whole, or cut with an ellipsis
            assert name in shown or any(name[:n] + "…" in shown for n in range(8, len(name)))


async def test_f_keys_leave_the_chat_box() -> None:
    """TextArea binds F6 to "select line": with the message box focused, F6 never
    reached the Hub tab."""
    app = dashboard()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        for tab in TABS:
            await show(pilot, "chat")
            assert app.query_one("#chat-input").has_focus
            await show(pilot, tab)
