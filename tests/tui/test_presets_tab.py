"""The Models tab lists the config file's presets beside the models they use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shimmy.api.server_control import ServerControl
from shimmy.config import ModelPreset, Settings
from shimmy.models.manager import ModelManager
from shimmy.tui.models_pane import ModelsPane, ModelTable
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
