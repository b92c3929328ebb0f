"""The Models tab lists the config file's presets beside the models they use, and
a preset whose Hugging Face model is not here yet as one to pull: loading it
pulls it (from the fake hub) and the row becomes the file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shimmy.api.server_control import ServerControl
from shimmy.config import ModelPreset, Settings
from shimmy.models.manager import ModelManager
from shimmy.tui.models_pane import ModelsPane, ModelTable
from tests.hub.fakehub import FakeHub
from tests.real_model import SMOLLM2_NAME
from tests.tui.apps import make_app
from tests.waiting import settle

pytestmark = [pytest.mark.anyio, pytest.mark.model]


@pytest.fixture
def preset_manager(isolated_home: Path) -> Iterator[ModelManager]:
    presets = (
        ModelPreset("pirate", SMOLLM2_NAME, system="Talk like a pirate."),
        ModelPreset("missing", "no-such-model"),
    )
    manager = ModelManager(Settings(keep_alive=-1, preload=False, presets=presets))
    yield manager
    manager.close()


async def test_presets_are_rows_of_the_models_tab(preset_manager: ModelManager) -> None:
    server = ServerControl(preset_manager, "127.0.0.1", 0)
    try:
        app = make_app(preset_manager, server, serve=False)
        async with app.run_test(size=(160, 30)) as pilot:
            pane = app.query_one(ModelsPane)
            await settle(pilot, lambda: pane.entries, what="discovery's entries")
            table = app.query_one(ModelTable)
            row = [str(c) for c in table.get_row("pirate")]
            assert row[:7] == ["pirate", "preset", "98.4 MB", "Q4_1", "llama", "135M", "8192"]
            assert str(table.get_row(SMOLLM2_NAME)[1]) == "python"
            assert str(table.get_row("missing")[7]) == "unusable"
            missing = next(e for e in pane.entries if e.name == "missing")
            assert (missing.error or "").startswith("no model or file 'no-such-model'")
    finally:
        server.stop()


HUB_MODEL = "hf.co/shimmy-test/SmolLM2-135M-Instruct-GGUF:Q8_0"


async def test_loading_a_preset_to_pull_pulls_it_and_shows_the_file(fake_hub: FakeHub) -> None:
    preset = ModelPreset("fresh", HUB_MODEL, engine=(("ctx_size", 256), ("parallel", 1)))
    manager = ModelManager(Settings(keep_alive=-1, preload=False, presets=(preset,)))
    server = ServerControl(manager, "127.0.0.1", 0)
    try:
        app = make_app(manager, server, serve=False)
        async with app.run_test(size=(160, 30)) as pilot:
            pane = app.query_one(ModelsPane)
            await settle(pilot, lambda: pane.entries, what="discovery's entries")
            table = app.query_one(ModelTable)
            assert str(table.get_row("fresh")[7]) == "to pull"
            table.move_cursor(row=table.get_row_index("fresh"))
            await pilot.pause()
            await pilot.press("l")
            await settle(pilot, lambda: not pane.busy and manager.is_loaded("fresh"), 120)
            await settle(pilot, lambda: str(table.get_row("fresh")[2]) == "98.4 MB", 10)
            assert str(table.get_row("fresh")[7]) == "loaded"
            fresh = next(e for e in pane.entries if e.name == "fresh")
            assert fresh.usable and fresh.pull is None
    finally:
        server.stop()
        manager.close()
