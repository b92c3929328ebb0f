"""The Hub tab against the fake hub of tests/hub (real huggingface_hub calls, the
real SmolLM2 bytes): search, pick a file, download it with live progress, find it
on the Models tab and chat with it; a download queue; cancel and resume; offline."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from textual.notifications import Notify
from textual.widgets import DataTable, Input, ProgressBar, Select, TabbedContent
from textual.widgets.data_table import ColumnKey
from textual.widgets.select import InvalidSelectValueError

from shimmy.api.server_control import ServerControl
from shimmy.models import hub
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp
from shimmy.tui.chat_pane import ChatPane
from shimmy.tui.download_queue import DownloadQueue
from shimmy.tui.help_screen import HelpScreen
from shimmy.tui.hub_pane import HubPane
from shimmy.tui.models_pane import ModelsPane, ModelTable
from tests.hub.fakehub import FakeHub
from tests.tui.apps import make_app
from tests.tui.fakes import FakeManager, FakeServer
from tests.waiting import eventually_async, settle

pytestmark = pytest.mark.anyio

REPO = "shimmy-test/SmolLM2-135M-Instruct-GGUF"
PULLED = "smollm2-135m-instruct-q4_k_m"  # the name discovery gives the Q4_K_M file
SPLIT = "shimmy-test/SmolLM2-split-GGUF"  # one model in two parts


class Recorder:
    """Every message the app handles that the tests look at (once each: messages
    that bubble are handled by several widgets)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._ids: set[int] = set()

    def __call__(self, message: object) -> None:
        kinds = (DownloadQueue.Progressed, DownloadQueue.Finished, ChatPane.ReplyFinished, Notify)
        if isinstance(message, kinds) and id(message) not in self._ids:
            self._ids.add(id(message))
            self.messages.append(message)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    def notes(self) -> list[Any]:
        return [m.notification for m in self.of(Notify)]


async def search_and_list(app: Any, pilot: Any) -> HubPane:
    """Search "smollm2", open the most downloaded repository, list its files."""
    await pilot.pause()
    assert app.query_one("#hub-query", Input).has_focus
    await pilot.press(*"smollm2", "enter")
    pane = app.query_one(HubPane)
    await settle(pilot, lambda: bool(pane.models), timeout=120)
    results = app.query_one("#hub-results", DataTable)
    await settle(pilot, lambda: results.has_focus, timeout=5)  # Widget.focus() is deferred
    assert [str(c) for c in results.get_row(REPO)] == [REPO, "135M", "5.0k", "40", "2025-03-01"]
    assert results.get_row_index(REPO) == 0  # sorted by downloads
    await pilot.press("enter")
    await settle(pilot, lambda: bool(pane.files), timeout=120)
    files = app.query_one("#hub-files", DataTable)
    await settle(pilot, lambda: files.has_focus, timeout=5)
    assert [str(files.get_row_at(i)[0]) for i in range(files.row_count)] == [
        "IQ4_XS",
        "Q4_K_M",
        "Q8_0",
    ]
    assert {str(files.get_row_at(i)[3]) for i in range(3)} <= {"fits", "tight", "too large"}
    await pilot.press("down")
    assert pane.selected_file().quantization == "Q4_K_M"
    return pane


@pytest.mark.model
async def test_search_download_then_list_and_chat(
    manager: ModelManager, server: ServerControl, fake_hub: FakeHub
) -> None:
    fake_hub.throttle_bytes_per_second = 10_000_000  # slow until the second one is queued
    record = Recorder()
    app = make_app(manager, server, serve=False, stats_interval=0, initial_tab="hub")
    async with app.run_test(size=(140, 40), message_hook=record) as pilot:
        pane = await search_and_list(app, pilot)
        await pilot.press("d")  # Q4_K_M
        # While it downloads, open the split repository and queue its model.
        app.query_one("#hub-results", DataTable).focus()
        await pilot.press("down", "enter")
        await settle(pilot, lambda: pane.repo_id == SPLIT and len(pane.files) == 1, timeout=120)
        await pilot.press("d")
        queue = pane.downloads
        assert [j.state for j in queue.jobs] == ["downloading", "queued"]
        fake_hub.throttle_bytes_per_second = None
        await settle(pilot, lambda: all(j.state == "done" for j in queue.jobs), timeout=120)

        progress = [m.progress for m in record.of(DownloadQueue.Progressed)]
        downloading = [p for p in progress if p.phase == "downloading"]
        assert downloading and downloading[-1].bytes_per_second > 0
        assert any(0 < p.fraction < 1 for p in downloading)
        assert progress[-1].phase == "done" and progress[-1].fraction == 1.0
        assert app.query_one("#download-bar", ProgressBar).percentage == 1.0
        # The State column widens to what it shows ("done: NAME"), not cut to "downloading".
        states = queue.query_one(DataTable)
        assert states.columns[ColumnKey("state")].content_width >= len(f"done: {PULLED}")
        finished = record.of(DownloadQueue.Finished)
        assert [(m.state, m.model_name) for m in finished] == [
            ("done", PULLED),
            ("done", "smollm2-q4_k_m"),
        ]
        # One at a time: the second started after the first had ended.
        first_done = record.messages.index(finished[0])
        assert all(m.job_id == 1 for m in record.messages[:first_done] if hasattr(m, "job_id"))

        # The Models tab lists it without a restart.
        await pilot.press("f2")
        table = app.query_one(ModelTable)
        await settle(pilot, lambda: PULLED in table.rows, timeout=120)
        models = app.query_one(ModelsPane)
        assert next(e for e in models.entries if e.name == PULLED).source == "huggingface"
        assert "smollm2-q4_k_m" in table.rows
        split = manager.registry.resolve("smollm2-q4_k_m")
        assert split.origin == SPLIT and len(split.parts) == 2

        # And the Chat tab can talk to it.
        await pilot.press("f3")

        def choose_it() -> bool:  # offered once the Chat tab has the new list
            try:
                app.query_one("#chat-model", Select).value = PULLED
            except InvalidSelectValueError:
                return False
            return True

        await settle(pilot, choose_it, timeout=120)
        app.query_one("#max-tokens", Input).value = "16"
        app.query_one("#temperature", Input).value = "0"
        app.query_one(ChatPane).send("Say hello.")
        await settle(pilot, lambda: bool(record.of(ChatPane.ReplyFinished)), timeout=120)
        (reply,) = record.of(ChatPane.ReplyFinished)
        assert reply.text.strip() and reply.finish_reason in ("stop", "length")
        assert manager.is_loaded(PULLED)
        await app.workers.wait_for_complete()


@pytest.mark.model
async def test_cancel_keeps_the_partial_and_resumes(
    manager: ModelManager, server: ServerControl, fake_hub: FakeHub
) -> None:
    fake_hub.throttle_bytes_per_second = 5_000_000  # 20 s for the whole file
    record = Recorder()
    app = make_app(manager, server, serve=False, stats_interval=0, initial_tab="hub")
    async with app.run_test(size=(140, 40), message_hook=record) as pilot:
        pane = await search_and_list(app, pilot)
        file = pane.selected_file()
        assert file is not None
        await pilot.press("d", "down", "d")  # Q4_K_M, then Q8_0 queued
        queue = pane.downloads

        def fetched() -> bool:
            return any(m.progress.done > 2_000_000 for m in record.of(DownloadQueue.Progressed))

        await settle(pilot, fetched, timeout=30)
        await pilot.press("x")  # cancel it and the queued one
        await settle(pilot, lambda: bool(record.of(DownloadQueue.Finished)), timeout=30)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [j.state for j in queue.jobs] == ["cancelled", "cancelled"]
        assert [m.state for m in record.of(DownloadQueue.Finished)] == ["cancelled"]
        bar = app.query_one("#download-bar", ProgressBar)
        assert bar.percentage is not None and 0 < bar.percentage < 1
        kept = hub.partial_bytes(file)
        assert 2_000_000 < kept < file.size
        assert PULLED not in {e.name for e in manager.registry.entries()}

        # The same file again resumes with a Range request.
        fake_hub.throttle_bytes_per_second = None
        fake_hub.requests.clear()
        await pilot.press("up", "d")
        await settle(pilot, lambda: queue.jobs[-1].state == "done", timeout=60)
        assert fake_hub.ranges() == [f"bytes={kept}-"]
        assert queue.jobs[-1].model_name == PULLED


@pytest.mark.model
async def test_offline_says_so(
    manager: ModelManager,
    server: ServerControl,
    fake_hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = Recorder()
    app = make_app(manager, server, serve=False, stats_interval=0, initial_tab="hub")
    async with app.run_test(size=(140, 40), message_hook=record) as pilot:
        pane = await search_and_list(app, pilot)
        # The hub goes away between listing and downloading.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", dead)
        await pilot.press("d")
        await settle(pilot, lambda: bool(record.of(DownloadQueue.Finished)), timeout=30)
        (finished,) = record.of(DownloadQueue.Finished)
        assert finished.state == "failed"
        (note,) = [n for n in record.notes() if n.title == "Download failed"]
        assert note.severity == "error"
        assert note.message.startswith(f"error: Cannot reach the Hugging Face Hub at {dead}")
        assert pane.downloads.jobs[0].state == "failed"

        # Switched off: a search fails at once and says how to switch it on.
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        await pilot.press("slash")
        assert app.query_one("#hub-query", Input).has_focus
        await pilot.press("enter")
        await settle(
            pilot, lambda: any(n.title == "Hub search" for n in record.notes()), timeout=120
        )
        (note,) = [n for n in record.notes() if n.title == "Hub search"]
        assert "HF_HUB_OFFLINE" in note.message and note.severity == "error"


async def test_f6_help_and_palette_reach_the_hub() -> None:
    manager = FakeManager()
    app = ShimmyApp(manager, FakeServer(manager), serve=False, stats_interval=0)
    async with app.run_test() as pilot:
        await pilot.pause()  # the initial tab is shown after the first refresh
        await pilot.press("f6")
        assert app.query_one("#tabs", TabbedContent).active == "hub"
        assert app.query_one("#hub-query", Input).has_focus
        await pilot.press("d")  # typed into the search box, not a download
        assert app.query_one("#hub-query", Input).value == "d"
        app.query_one("#hub-results").focus()
        await pilot.press("d")  # no file listed yet: says so
        await pilot.press("c")
        await pilot.pause()
        assert not app.query_one(HubPane).downloads.jobs
        # The Hub's keys are in the palette, each with its key (test_keys.py checks all).
        keys = {c.help.partition(" (")[0] for c in app.get_system_commands(app.screen)}
        assert {"F6", "/ · Hub", "d · Hub", "c · Hub", "x · Hub"} <= keys
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)


@pytest.mark.model
async def test_quitting_stops_a_download(
    manager: ModelManager,
    server: ServerControl,
    fake_hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_hub.throttle_bytes_per_second = 5_000_000
    returned = threading.Event()  # the worker thread's download() has returned or raised
    real_download = hub.download

    def download(*args: Any, **kwargs: Any) -> Path:
        try:
            return real_download(*args, **kwargs)
        finally:
            returned.set()

    monkeypatch.setattr(hub, "download", download)
    record = Recorder()
    app = make_app(manager, server, serve=False, stats_interval=0, initial_tab="hub")
    async with app.run_test(size=(140, 40), message_hook=record) as pilot:
        pane = await search_and_list(app, pilot)
        file = pane.selected_file()
        assert file is not None
        await pilot.press("d")
        await settle(pilot, lambda: bool(record.of(DownloadQueue.Progressed)), timeout=30)
        (job,) = pane.downloads.jobs
        await pilot.press("ctrl+q")
    assert job.cancel.is_set()
    # The worker thread sees the event at its next chunk and stops writing.
    await eventually_async(returned.is_set, 30, what="the download thread to stop")
    kept = hub.partial_bytes(file)
    time.sleep(0.5)  # not synchronisation: half a second in which nothing more may arrive
    assert hub.partial_bytes(file) == kept < file.size
