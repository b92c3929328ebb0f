"""A pulled model never becomes the default, in the dashboard: with the real
manager, a model just downloaded into the Hugging Face cache (searched before the
Python package that brings SmolLM2) beside SmolLM2; "default model" in the Chat
tab names SmolLM2, and only ``d`` changes that, for the next run too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from textual.widgets import Static

from shimmy.api.server_control import ServerControl
from shimmy.config import Settings
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp
from shimmy.tui.chat_pane import ChatPane
from shimmy.tui.models_pane import ModelTable
from tests.gguf_writer import write_model
from tests.real_model import SMOLLM2_NAME
from tests.waiting import settle

pytestmark = pytest.mark.anyio

PULLED = "new-pulled"


def pull(hf_home: Path) -> None:
    """A model as a Hub download leaves it in the cache: a blob and a snapshot link."""
    repo = hf_home / "hub" / "models--someone--New-GGUF"
    blob = write_model(repo / "blobs" / ("b" * 64), PULLED)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    link = repo / "snapshots" / ("a" * 40) / f"{PULLED}.gguf"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))


def default_named(app: ShimmyApp) -> str:
    """What the Chat tab's settings say "default model" is."""
    pane = app.query_one(ChatPane)
    note = app.query_one("#default-model-name", Static)
    return str(note.content) if pane.settings.model is None and note.display else ""


async def test_a_pulled_model_does_not_become_the_default(
    isolated_home: Path, tmp_path: Path
) -> None:
    pull(tmp_path / "hf")
    await run_dashboard(first=True)
    await run_dashboard(first=False)  # the next run remembers the user's choice


async def run_dashboard(*, first: bool) -> None:
    manager = ModelManager(Settings(keep_alive=-1, preload=False))
    server = ServerControl(manager, "127.0.0.1", 0)
    app = ShimmyApp(manager, server, serve=False, stats_interval=0, initial_tab="chat")
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            pane = app.query_one(ChatPane)
            await settle(pilot, lambda: PULLED in pane.settings.model_names)
            if not first:
                assert manager.default_model_name == PULLED
                assert default_named(app) == PULLED
                return
            # Found first, yet not the default: SmolLM2 was here before it.
            assert manager.registry.entries()[0].name == PULLED
            assert default_named(app) == SMOLLM2_NAME
            # Only the user makes it the default: d on the Models tab.
            await pilot.press("f2")
            table = app.query_one(ModelTable)
            await settle(pilot, lambda: table.row_count == 2)
            table.move_cursor(row=table.get_row_index(PULLED))
            table.focus()
            await pilot.press("d")
            await settle(pilot, lambda: manager.default_model_name == PULLED)
            await pilot.press("f3")
            await settle(pilot, lambda: pane.settings.default_name == PULLED)
            assert default_named(app) == PULLED
    finally:
        server.stop()
        manager.close()
