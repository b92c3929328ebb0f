"""The Models tab: listing, filtering and every action on the real SmolLM2 model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, Static

from shimmy.api.server_control import ServerControl
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp
from shimmy.tui.models_pane import ModelsPane, ModelTable
from tests.real_model import SMOLLM2_NAME
from tests.tui.apps import make_app
from tests.waiting import settle

pytestmark = [pytest.mark.anyio, pytest.mark.model]


def _text(renderable: object) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


async def _highlight(pilot: Pilot[Any], name: str) -> None:
    table = pilot.app.query_one(ModelTable)
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause()


async def _ready(app: ShimmyApp, pilot: Pilot[Any]) -> ModelsPane:
    """The pane once discovery's result has reached it (every test here finds a model)."""
    pane = app.query_one(ModelsPane)
    await settle(pilot, lambda: pane.entries, what="discovery's entries")
    return pane


async def test_lists_models_with_their_figures(
    manager: ModelManager, server: ServerControl, isolated_home: Path
) -> None:
    broken = isolated_home.parent / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    manager.registry.model_dirs = (str(broken),)
    app = make_app(manager, server, serve=False)
    async with app.run_test(size=(200, 30)) as pilot:  # wide enough for every column
        pane = await _ready(app, pilot)
        table = app.query_one(ModelTable)
        assert table.has_focus
        row = [str(c) for c in table.get_row(SMOLLM2_NAME)]
        assert row[:7] == [SMOLLM2_NAME, "python", "98.4 MB", "Q4_1", "llama", "135M", "8192"]
        assert row[7] == "default"
        unusable = next(e for e in pane.entries if not e.usable)
        assert str(table.get_cell(unusable.name, "state")) == "unusable"
        await _highlight(pilot, unusable.name)  # why: in the details panel
        assert f"unusable    {unusable.error}"[:40] in _text(
            app.query_one("#model-info", Static).content
        )


async def test_filter(manager: ModelManager, server: ServerControl) -> None:
    app = make_app(manager, server, serve=False)
    async with app.run_test() as pilot:
        await _ready(app, pilot)
        table = app.query_one(ModelTable)
        await pilot.press("slash", "s", "m", "o")
        assert app.query_one("#model-filter", Input).value == "smo"
        assert table.row_count == 1
        await pilot.press("x", "y", "z")
        assert table.row_count == 0
        await pilot.press("escape")  # clears the filter and goes back to the table
        assert table.has_focus and table.row_count == 1


async def test_probe_load_unload_default(manager: ModelManager, server: ServerControl) -> None:
    app = make_app(manager, server, serve=False, stats_interval=0)
    async with app.run_test(size=(140, 30)) as pilot:
        pane = await _ready(app, pilot)
        table = app.query_one(ModelTable)

        await pilot.press("p")
        report = await settle(pilot, lambda: not pane.busy and pane.reports.get(SMOLLM2_NAME))
        assert report and report.completion_tokens > 0 and report.sample.strip()
        assert manager.is_loaded(SMOLLM2_NAME)
        assert str(table.get_cell(SMOLLM2_NAME, "state")) == "loaded, default"
        shown = _text(app.query_one("#model-probe", Static).content)
        assert "load time" in shown and report.sample.strip()[:20] in shown

        await pilot.press("u")
        await settle(pilot, lambda: not pane.busy and not manager.is_loaded(SMOLLM2_NAME))
        assert str(table.get_cell(SMOLLM2_NAME, "state")) == "default"

        await pilot.press("l")
        await settle(pilot, lambda: not pane.busy and manager.is_loaded(SMOLLM2_NAME))

        await pilot.press("d")
        await pilot.pause()
        assert manager.default_model_name == SMOLLM2_NAME

        before = pane.entries
        await pilot.press("r")
        await settle(pilot, lambda: pane.entries is not before, what="rediscovered entries")
        assert table.row_count == len(pane.entries) >= 1


async def test_a_failed_action_is_a_notification(
    manager: ModelManager, server: ServerControl, isolated_home: Path
) -> None:
    from tests.gguf_writer import write_model

    alien = write_model(isolated_home.parent / "alien" / "alien.gguf", arch="notarealarch")
    manager.registry.model_dirs = (str(alien),)
    app = make_app(manager, server, serve=False)
    async with app.run_test(size=(140, 30)) as pilot:
        await _ready(app, pilot)
        table = app.query_one(ModelTable)
        table.move_cursor(row=table.get_row_index("alien"))
        await pilot.press("l")

        def failure_shown() -> bool:
            return any("Model 'alien' failed to load" in n.message for n in app._notifications)

        await settle(pilot, failure_shown, what="the load failure's notification")
