"""Snapshots of every dashboard screen with fixed content (pytest-textual-snapshot).

Regenerate after an intended change with `pytest tests/tui/test_snapshots.py
--snapshot-update` and look at the report before committing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from shimmy.chats import ChatStore
from shimmy.models.hub import DownloadProgress
from shimmy.models.probe import ProbeReport
from shimmy.tui.app import LIGHT_THEME, ShimmyApp
from shimmy.tui.chat_log import ChatMessage
from shimmy.tui.chat_pane import ChatPane
from shimmy.tui.download_queue import DownloadQueue
from shimmy.tui.hub_pane import HubPane
from shimmy.tui.logsink import DashboardLogHandler
from shimmy.tui.messages import StatsUpdated
from shimmy.tui.models_pane import ModelsPane, ModelTable
from shimmy.tui.server_pane import ServerPane
from tests.tui.fakes import (
    ENTRIES,
    HUB_FILES,
    HUB_FITS,
    HUB_MODELS,
    STATS,
    FakeManager,
    FakeServer,
    fill_chats,
    fixed_clock,
    gguf_info,
)
from tests.waiting import eventually_async

MODEL = "smollm2-135m-instruct-q4_1"
LOG_LINES = [
    (20, "00:00:01 INFO    shimmy.cli: llama.cpp's own messages go to ~/.local/state/shimmy/log"),
    (20, "00:00:02 INFO    shimmy.models.manager: loading model smollm2-135m-instruct-q4_1"),
    (20, "00:00:03 INFO    shimmy.models.manager: loaded smollm2-135m-instruct-q4_1 in 0.79s"),
    (30, "00:00:09 WARNING shimmy.api: model 'nope' was not found"),
    (40, "00:00:12 ERROR   shimmy.models.engine: generation failed: context is full"),
]


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def dashboard(
    tab: str = "models",
    *,
    running: bool = True,
    ollama: bool = False,
    ollama_error: str | None = None,
    chats: ChatStore | None = None,
) -> ShimmyApp:
    """The app over fakes; ``running`` false: the server was not started (--no-server);
    ``ollama``: with Ollama's listener, started (or failing with ``ollama_error``)."""
    manager = FakeManager()
    handler = DashboardLogHandler()
    handler.records.extend(LOG_LINES)
    return ShimmyApp(
        manager,
        FakeServer(manager, running=running, ollama=ollama, ollama_error=ollama_error),
        serve=running,
        stats_interval=0,
        initial_tab=tab,
        log_handler=handler,
        chats=chats,
    )


@pytest.fixture
def saved_chats(tmp_path: Path) -> Iterator[ChatStore]:
    """A chats database holding fill_chats' conversations, on a stopped clock."""
    store = ChatStore(tmp_path / "chats.db", clock=fixed_clock)
    fill_chats(store)
    yield store
    store.close()


def settle(extra: Callable[[Pilot[Any]], Any] | None = None) -> Callable[[Pilot[Any]], Any]:
    """Wait for workers, freeze cursors, feed fixed stats, then run ``extra``."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        await app.workers.wait_for_complete()
        for field in app.query(Input):
            field.cursor_blink = False
        for area in app.query(TextArea):
            area.cursor_blink = False
        app.post_message(StatsUpdated(STATS, 0))
        await pilot.pause()
        pane = app.query_one(ServerPane)
        pane.history.extend([0, 12, 48, 90, 88, 91, 87, 40, 0, 0, 60, 89, 92, 90, 30])
        pane.stats_changed(STATS)
        if extra is not None:
            result = extra(pilot)
            if result is not None:
                await result
        await app.workers.wait_for_complete()
        await pilot.pause()

    return run_before


def test_models(snap_compare: Any) -> None:
    assert snap_compare(dashboard(), terminal_size=(120, 32), run_before=settle())


def test_models_probed_80x24(snap_compare: Any) -> None:
    entry = next(e for e in ENTRIES if e.name == MODEL)
    report = ProbeReport(
        entry=entry,
        info=gguf_info(entry.path, chat_template="{{ messages }}"),
        header_seconds=0.001,
        load_seconds=0.79,
        was_loaded=False,
        memory_bytes=474_100_000,
        rss_delta_bytes=474_100_000,
        n_ctx=4096,
        prompt_tokens=14,
        completion_tokens=32,
        time_to_first_token=0.041,
        tokens_per_second=88.3,
        sample="The sea is a vast and mysterious realm.",
    )

    def probed(pilot: Pilot[Any]) -> None:
        pane = pilot.app.query_one(ModelsPane)
        pane.reports[MODEL] = report
        table = pane.query_one("#models-table", ModelTable)
        table.move_cursor(row=table.get_row_index(MODEL))

    assert snap_compare(dashboard(), terminal_size=(80, 24), run_before=settle(probed))


def test_models_filtered(snap_compare: Any) -> None:
    assert snap_compare(
        dashboard(), press=["slash", "l", "l", "a"], terminal_size=(100, 24), run_before=settle()
    )


async def chat_ready(pilot: Pilot[Any]) -> ChatPane:
    """The Chat tab once its list of saved conversations is on screen."""
    pane = pilot.app.query_one(ChatPane)
    await eventually_async(lambda: pane.sidebar.conversations, what="the chat list")
    await pilot.app.workers.wait_for_complete()
    return pane


def test_chat(snap_compare: Any, saved_chats: ChatStore) -> None:
    """A new conversation beside the saved ones: the sidebar, a reply naming its model."""

    async def chat(pilot: Pilot[Any]) -> None:
        pane = await chat_ready(pilot)
        pane.send("Give me three tips for writing clear code.")

    assert snap_compare(
        dashboard("chat", chats=saved_chats), terminal_size=(120, 36), run_before=settle(chat)
    )


def test_chat_80x24(snap_compare: Any, saved_chats: ChatStore) -> None:
    """The classic terminal: the chat list hidden (ctrl+l shows it), the reply wide."""

    async def chat(pilot: Pilot[Any]) -> None:
        pane = await chat_ready(pilot)
        pane.send("Give me three tips for writing clear code.")

    assert snap_compare(
        dashboard("chat", chats=saved_chats), terminal_size=(80, 24), run_before=settle(chat)
    )


def test_chat_light_theme(snap_compare: Any, saved_chats: ChatStore) -> None:
    async def chat(pilot: Pilot[Any]) -> None:
        pilot.app.theme = LIGHT_THEME
        pane = await chat_ready(pilot)
        pane.send("Give me three tips for writing clear code.")

    assert snap_compare(
        dashboard("chat", chats=saved_chats), terminal_size=(120, 36), run_before=settle(chat)
    )


def test_chat_search(snap_compare: Any, saved_chats: ChatStore) -> None:
    """Every conversation searched: one match each, the matched words marked."""

    async def search(pilot: Pilot[Any]) -> None:
        pane = await chat_ready(pilot)
        await pilot.press("ctrl+f", *"python")
        await eventually_async(lambda: pane.sidebar.hits, what="the matches")

    assert snap_compare(
        dashboard("chat", chats=saved_chats), terminal_size=(120, 36), run_before=settle(search)
    )


def test_chat_resumed(snap_compare: Any, saved_chats: ChatStore) -> None:
    """A saved conversation opened again: its system prompt and settings back, its
    model gone (said, and the default offered), a refused message marked, a reply
    that left out the oldest turn, a code block under the cursor."""

    async def resume(pilot: Pilot[Any]) -> None:
        pane = await chat_ready(pilot)
        await pilot.press("ctrl+l", "enter")  # the most recent: Quicksort in Python
        await eventually_async(lambda: len(pane.log_view.query(ChatMessage)) == 5)
        await pilot.pause()
        pane.log_view.focus()
        await pilot.press("end")  # the last code block

    assert snap_compare(
        dashboard("chat", chats=saved_chats), terminal_size=(120, 42), run_before=settle(resume)
    )


def test_chat_resumed_light_theme(snap_compare: Any, saved_chats: ChatStore) -> None:
    """The same in the light theme: the notice about the missing model stays readable."""

    async def resume(pilot: Pilot[Any]) -> None:
        pilot.app.theme = LIGHT_THEME
        pane = await chat_ready(pilot)
        await pilot.press("ctrl+l", "enter")
        await eventually_async(lambda: len(pane.log_view.query(ChatMessage)) == 5)
        await pilot.pause()

    assert snap_compare(
        dashboard("chat", chats=saved_chats), terminal_size=(120, 42), run_before=settle(resume)
    )


def test_server(snap_compare: Any) -> None:
    assert snap_compare(dashboard("server"), terminal_size=(120, 34), run_before=settle())


def test_server_with_ollama(snap_compare: Any) -> None:
    app = dashboard("server", ollama=True)
    assert snap_compare(app, terminal_size=(120, 34), run_before=settle())


def test_server_ollama_port_taken_80x24(snap_compare: Any) -> None:
    taken = (
        "Port 11434 on 127.0.0.1 is already in use (Stop the other server or choose "
        "another port with --ollama HOST:PORT)"
    )
    app = dashboard("server", ollama=True, ollama_error=taken)
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle())


def test_server_stopped_80x24(snap_compare: Any) -> None:
    assert snap_compare(
        dashboard("server", running=False), terminal_size=(80, 24), run_before=settle()
    )


def test_log(snap_compare: Any) -> None:
    assert snap_compare(dashboard("log"), terminal_size=(100, 24), run_before=settle())


def test_log_80x24(snap_compare: Any) -> None:
    assert snap_compare(dashboard("log"), terminal_size=(80, 24), run_before=settle())


def test_help(snap_compare: Any) -> None:
    assert snap_compare(dashboard(), press=["f1"], terminal_size=(100, 40), run_before=settle())


def test_help_80x24(snap_compare: Any) -> None:
    assert snap_compare(dashboard(), press=["f1"], terminal_size=(80, 24), run_before=settle())


async def browsing(pilot: Pilot[Any]) -> None:
    """Fixed results and files (one on disk, one partly kept), a download held at
    38% and one queued."""
    pane = pilot.app.query_one(HubPane)
    pane.query_one("#hub-query", Input).value = "smollm2"
    pane.post_message(HubPane.SearchDone("smollm2", HUB_MODELS))
    kept = [0, 40_090_000, HUB_FILES[2].size, 0]
    pane.post_message(HubPane.FilesListed(HUB_MODELS[0].repo_id, HUB_FILES, HUB_FITS, kept))
    await pilot.pause()
    queue = pane.downloads
    queue.add(HUB_FILES[1])
    queue.add(HUB_FILES[3])
    file = HUB_FILES[1]
    progress = DownloadProgress(file, file.name, 40_090_000, file.size, 12_500_000, "downloading")
    queue.post_message(DownloadQueue.Progressed(1, progress))
    await pilot.pause()
    pilot.app.clear_notifications()


def test_hub(snap_compare: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # No hub and no download.
    monkeypatch.setattr(DownloadQueue, "_download", lambda self, job: None)
    assert snap_compare(dashboard("hub"), terminal_size=(120, 34), run_before=settle(browsing))


def test_hub_80x24(snap_compare: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DownloadQueue, "_download", lambda self, job: None)
    assert snap_compare(dashboard("hub"), terminal_size=(80, 24), run_before=settle(browsing))
