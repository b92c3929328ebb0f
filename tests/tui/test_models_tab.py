"""The Models tab as a daily user meets it (issue 15): the State column keeps up
with loads, narrow terminals keep Name and State, letters never both filter and
act, Enter chats, and a pulled model can be deleted (asking first). Over the
fakes of tests/tui/fakes.py: no model is loaded, so these run in a second."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TabbedContent
from textual.widgets.data_table import ColumnKey

from shimmy.models.hf_cache import huggingface_cache_dir
from shimmy.models.hub import HubFile, HubPart, record_pull
from shimmy.models.registry import ModelEntry
from shimmy.tui.app import ShimmyApp
from shimmy.tui.chat_pane import ChatPane
from shimmy.tui.dialogs import ConfirmScreen
from shimmy.tui.model_columns import fit_columns
from shimmy.tui.models_pane import ModelsPane, ModelTable
from tests.tui.fakes import ENTRIES, FakeManager, FakeRegistry, FakeServer, model_entry
from tests.tui.test_markup import screen_text
from tests.waiting import settle

pytestmark = pytest.mark.anyio

QWEN = "qwen2.5-0.5b-instruct-q4_k_m"
SMOL = "smollm2-135m-instruct-q4_1"


class LoadingManager(FakeManager):
    """A FakeManager whose loads succeed (at once, nothing is read)."""

    def load(self, name: str | None) -> None:
        if name is not None:
            self.loaded.add(name)


class DiskRegistry(FakeRegistry):
    """Discovery that lists only the models whose file is still there."""

    def refresh(self) -> list[ModelEntry]:
        self.items = [e for e in self.items if os.path.lexists(e.path)]
        return list(self.items)


def app_over(manager: FakeManager, **kwargs: Any) -> ShimmyApp:
    return ShimmyApp(manager, FakeServer(manager), serve=False, stats_interval=0, **kwargs)


async def ready(pilot: Pilot[Any]) -> ModelsPane:
    pane = pilot.app.query_one(ModelsPane)
    table = pane.query_one(ModelTable)
    await settle(pilot, lambda: table.row_count and table.has_focus, what="the models")
    return pane


async def highlight(pilot: Pilot[Any], name: str) -> None:
    table = pilot.app.query_one(ModelTable)
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause()


def test_narrow_tables_drop_the_columns_that_matter_least() -> None:
    widths = {"name": 28, "source": 11, "size": 8, "quant": 6, "arch": 5}
    widths |= {"params": 6, "ctx": 6, "state": 15}
    assert fit_columns(widths, 0) == (list(widths), None)  # before the first layout
    assert fit_columns(widths, 200) == (list(widths), None)
    assert fit_columns(widths, 60) == (["name", "size", "state"], None)
    assert fit_columns(widths, 47) == (["name", "state"], None)
    # Too narrow even for those two: the name is cut, the state stays whole.
    assert fit_columns(widths, 40) == (["name", "state"], 21)


async def test_state_column_widens_as_models_load() -> None:
    manager = LoadingManager()
    manager.registry.items = [e for e in ENTRIES if e.name in (QWEN, SMOL)]
    manager.loaded = set()
    app = app_over(manager)
    async with app.run_test(size=(160, 30)) as pilot:
        pane = await ready(pilot)
        await highlight(pilot, QWEN)
        await pilot.press("l")
        await settle(pilot, lambda: not pane.busy and manager.is_loaded(QWEN))
        await pilot.press("d")
        await pilot.pause()
        table = app.query_one(ModelTable)
        assert str(table.get_row(QWEN)[-1]) == "loaded, default"
        assert table.columns[ColumnKey("state")].content_width >= len("loaded, default")
        assert "loaded, default" in screen_text(app)


@pytest.mark.parametrize("size", [(90, 30), (80, 24)])
async def test_narrow_terminals_keep_name_and_state(size: tuple[int, int]) -> None:
    manager = FakeManager()
    app = app_over(manager)
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.pause()
        shown = screen_text(app)
        for entry in ENTRIES:
            assert entry.name in shown, shown
        assert "loaded, default" in shown and "unusable" in shown, shown


async def test_filtering_never_fires_an_action() -> None:
    manager = LoadingManager()
    default = manager.default_model_name
    app = app_over(manager)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = await ready(pilot)
        table = app.query_one(ModelTable)
        field = app.query_one("#model-filter", Input)
        await pilot.press("h", "i")  # letters that are no action do nothing on the table
        assert field.value == "" and table.has_focus and table.row_count == len(ENTRIES)
        await pilot.press("slash", *"phi", *"ludrx")  # every action's letter, as text
        assert field.has_focus and field.value == "philudrx"
        assert table.row_count == 0
        await pilot.press("backspace", "backspace", "backspace", "backspace", "backspace")
        await pilot.press("backspace", "backspace", "backspace", *"llama3")
        await pilot.pause()
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == ["llama3.2:3b"]
        await app.workers.wait_for_complete()
        assert not pane.busy and not pane.reports and not isinstance(app.screen, ConfirmScreen)
        assert manager.loaded == {SMOL} and manager.default_model_name == default
        await pilot.press("enter")  # back to the table, the filter kept
        assert table.has_focus and field.value == "llama3"
        await pilot.press("escape")  # on the table: nothing to stop, the filter stays
        await pilot.press("slash", "escape")  # in the box: clears it
        assert table.has_focus and field.value == "" and table.row_count == len(ENTRIES)


async def test_enter_chats_with_the_model() -> None:
    manager = FakeManager()
    app = app_over(manager)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        await highlight(pilot, QWEN)
        await pilot.press("enter")
        chat = app.query_one(ChatPane)
        await settle(pilot, lambda: chat.settings.model == QWEN, what="the chat's model")
        assert app.query_one("#tabs", TabbedContent).active == "chat"
        assert chat.composer.has_focus
        # An unusable model says why instead.
        await pilot.press("f2")
        await highlight(pilot, "broken-download")
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one("#tabs", TabbedContent).active == "models"
        assert any("broken-download is unusable" in n.message for n in app._notifications)


def pulled_entry(repo_id: str, name: str, data: bytes) -> ModelEntry:
    """A model file laid out in the hub cache as `shimmy pull` leaves it, and recorded."""
    storage = huggingface_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    blob = storage / "blobs" / ("a" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    pointer = storage / "snapshots" / ("c" * 40) / name
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    file = HubFile(repo_id, name, (HubPart(name, len(data), "a" * 64),), "Q4_K_M")
    record_pull(file, [pointer], "main")
    entry = model_entry("pulled-q4_k_m", "huggingface", len(data), origin=repo_id)
    return dataclasses.replace(entry, path=pointer, parts=(pointer,))


async def test_delete_a_pulled_model_asks_first(isolated_home: Path) -> None:
    pulled = pulled_entry("someone/Pulled-GGUF", "Pulled-Q4_K_M.gguf", b"GGUF" + b"\0" * 1000)
    manager = FakeManager()
    manager.registry = DiskRegistry([pulled, *ENTRIES])
    app = app_over(manager)
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        pane = await ready(pilot)
        table = app.query_one(ModelTable)

        # Not pulled by shimmy: refused, as `shimmy rm` refuses it.
        await highlight(pilot, "llama3.2:3b")
        await pilot.press("x")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("not downloaded by shimmy" in n.message for n in app._notifications)

        await highlight(pilot, pulled.name)
        await pilot.press("x")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("n")  # no: nothing happens
        await pilot.pause()
        assert pulled.path.is_symlink() and pulled.name in table.rows

        await pilot.press("x")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await settle(pilot, lambda: pulled.name not in table.rows and not pane.busy)
        assert not os.path.lexists(pulled.path)
        assert not (pulled.path.parents[2] / "blobs").exists()
        assert any(n.message.startswith(f"Deleted {pulled.name}") for n in app._notifications)
        assert pulled.name not in app.query_one(ChatPane).settings.model_names
