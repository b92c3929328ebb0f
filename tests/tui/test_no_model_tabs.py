"""A first run with no model: the Models and Chat tabs say how to get one (the
Hub tab, a key away, and `shimmy pull` with a model that fits), and the chat's
usual hint comes back once a model is there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Static

from shimmy.api.server_control import ServerControl
from shimmy.config import Settings
from shimmy.models import sources
from shimmy.models.manager import ModelManager
from shimmy.tui.chat_pane import HINT, ChatPane
from shimmy.tui.models_pane import ModelsPane
from tests.tui.apps import make_app
from tests.waiting import settle

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def empty_manager(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelManager]:
    monkeypatch.setattr(sources, "_search_python", lambda search: None)
    manager = ModelManager(Settings(keep_alive=-1, preload=False))
    yield manager
    manager.close()


def _says_how_to_get_one(text: str) -> bool:
    return "press F6 for the Hub tab" in text and "shimmy pull Qwen/" in text


async def test_models_and_chat_tabs_say_how_to_get_a_model(empty_manager: ModelManager) -> None:
    server = ServerControl(empty_manager, "127.0.0.1", 0)
    try:
        app = make_app(empty_manager, server, serve=False)
        async with app.run_test(size=(140, 30)) as pilot:
            pane = app.query_one(ModelsPane)
            info = app.query_one("#model-info", Static)
            await settle(pilot, lambda: "No models found" in str(info.content), what="the note")
            assert pane.entries == []
            assert _says_how_to_get_one(str(info.content))
            chat = app.query_one(ChatPane)
            hint = chat.query_one("#chat-hint", Static)
            assert str(hint.content).startswith("No model to chat with yet.")
            assert _says_how_to_get_one(str(hint.content))
            chat.set_models(["some-model"], "some-model")  # a download arrived
            await pilot.pause()
            assert str(hint.content) == HINT
    finally:
        server.stop()
