"""Text from outside never acts as markup: request paths, client addresses, model,
file and hub names, log lines, notifications and chat text full of Rich/Textual
markup are shown literally, crash nothing and trigger nothing when clicked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, Select
from textual.widgets._toast import Toast
from textual.worker import WorkerFailed

from shimmy.api.requestlog import RequestLog
from shimmy.errors import ShimmyError
from shimmy.models.hub import DownloadProgress, Fit, HubFile, HubModel, HubPart
from shimmy.models.registry import ModelEntry
from shimmy.tui.app import ShimmyApp
from shimmy.tui.chat_log import ChatLog
from shimmy.tui.chat_pane import ChatMessage, ChatPane
from shimmy.tui.download_queue import DownloadQueue
from shimmy.tui.hub_pane import HubPane
from shimmy.tui.logsink import DashboardLogHandler
from shimmy.tui.messages import LogRecordPosted, StatsUpdated
from shimmy.tui.models_pane import ModelsPane, ModelTable
from tests.tui.fakes import (
    STATS,
    FakeGeneration,
    FakeManager,
    FakeRegistry,
    FakeServer,
    model_entry,
)
from tests.waiting import settle

pytestmark = pytest.mark.anyio

# Each would be markup: an unmatched closing tag (MarkupError), an action run on
# click, a link, and a bare auto-close.
CLOSING = "/x[/bold]"
CLICK = "[@click=app.quit]QUITNOW[/]"
LINK = "[link=https://evil.example]L[/link]"
AUTO = "[/]"
SIZE = (180, 50)


def screen_text(app: App[Any]) -> str:
    """What the terminal shows now, every layer (toasts, overlays) included."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def toasts(app: App[Any]) -> list[str]:
    """The text of each notification on screen, as its toast draws it (read from the
    toast rather than the screen, where a long one wraps)."""
    return [" ".join(toast.render().plain.split()) for toast in app.screen.query(Toast)]


async def workers_done(pilot: Pilot[Any]) -> None:
    """Let every worker end (a failed one is notified) and the app repaint."""
    try:
        await pilot.app.workers.wait_for_complete()
    except WorkerFailed:  # the app notifies it: tests read that notification
        pass
    await pilot.pause()
    await pilot.pause()


async def click_text(pilot: Pilot[Any], text: str) -> None:
    """Click the first place on screen that shows ``text``."""
    for y, line in enumerate(screen_text(pilot.app).splitlines()):
        x = line.find(text)
        if x != -1:
            await pilot.click(offset=(x + 1, y))
            await pilot.pause()
            return
    raise AssertionError(f"{text!r} is not on screen")


async def assert_still_running(pilot: Pilot[Any]) -> None:
    await pilot.pause()
    assert pilot.app.is_running and pilot.app.return_value is None


def app_over(manager: FakeManager, server: FakeServer, tab: str, **kwargs: Any) -> ShimmyApp:
    return ShimmyApp(
        manager,
        server,
        stats_interval=0,
        initial_tab=tab,
        **kwargs,
    )


def hostile_request_log() -> RequestLog:
    log = RequestLog()
    rows: list[tuple[str, str, str, Any]] = [
        ("127.0.0.1:50001", "GET", CLOSING, None),
        ("127.0.0.1:50002", "GET", "/" + CLICK, None),
        ("[red]10.0.0.9[/red]:4242", "POST", "/api/generate?" + LINK, None),
        ("127.0.0.1:50004", "POST", "/api/generate", FakeGeneration(model="model" + AUTO)),
    ]
    for client, method, path, generation in rows:
        record = log.open(client, method, path)
        record.generation = generation
        log.close(record, 404 if generation is None else 200)
    return log


async def test_request_log_rows_are_literal() -> None:
    manager = FakeManager()
    server = FakeServer(manager)
    server.request_log = hostile_request_log()
    app = app_over(manager, server, "server")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await workers_done(pilot)
        app.post_message(StatsUpdated(STATS, 0))  # the once-a-second redraw
        await workers_done(pilot)
        shown = screen_text(app)
        for text in (
            f"GET {CLOSING}",
            f"GET /{CLICK}",
            f"POST /api/generate?{LINK}",
            "[red]10.0.0.9[/red]:4242",
            "model" + AUTO,
        ):
            assert text in shown, shown
        table = app.query_one("#request-log", DataTable)
        assert table.row_count == 4
        await click_text(pilot, "QUITNOW")
        await assert_still_running(pilot)


def hostile_entries() -> list[ModelEntry]:
    return [
        model_entry(
            "evil" + CLOSING,
            "local",
            1_000_000,
            architecture=CLICK,
            quantization=AUTO,
            origin=LINK,
        ),
        model_entry("broken" + AUTO, "local", 1_000, error="bad header " + CLOSING),
    ]


async def test_model_names_files_and_errors_are_literal() -> None:
    manager = FakeManager()
    manager.registry.items = hostile_entries()
    manager.default_model_name = "evil" + CLOSING
    app = app_over(manager, FakeServer(manager), "models")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await workers_done(pilot)
        pane = app.query_one(ModelsPane)
        table = app.query_one(ModelTable)
        assert table.row_count == 2
        shown = screen_text(app)
        assert "evil" + CLOSING in shown and CLICK in shown and "broken" + AUTO in shown
        # The details panel: the name, the file path (from a stranger's folder) and origin.
        assert str(Path("/models/evil/x[/bold].gguf")) in shown
        assert f"local ({LINK})" in shown
        await click_text(pilot, "QUITNOW")
        await assert_still_running(pilot)
        # Loading the unusable one says why in a notification, quoting its name and error.
        table.move_cursor(row=1)
        await pilot.pause()
        assert pane.selected_name() == "broken" + AUTO
        await pilot.press("l")
        await workers_done(pilot)
        assert f"broken{AUTO} is unusable: bad header {CLOSING}" in toasts(app)
        # The Chat tab offers the same names in its model list.
        await pilot.press("f3")
        select = app.query_one("#chat-model", Select)
        select.value = "evil" + CLOSING
        await workers_done(pilot)
        assert "evil" + CLOSING in screen_text(app)
        app.clear_notifications()
        select.expanded = True
        await workers_done(pilot)
        assert "broken" + AUTO not in screen_text(app)  # only usable models are offered
        assert screen_text(app).count("evil" + CLOSING) >= 2  # the current one and the option
        await assert_still_running(pilot)


def hostile_hub() -> tuple[list[HubModel], list[HubFile], list[Fit]]:
    when = datetime(2025, 3, 1, tzinfo=UTC)
    repo = "evil/" + CLICK
    models = [
        HubModel(repo, 10, 1, when, None),
        HubModel("evil/repo" + CLOSING, 5, 0, when, None),
    ]
    names = ["model" + CLOSING + "-Q4_K_M.gguf", "m" + LINK + "-Q8_0.gguf"]
    files = [HubFile(repo, name, (HubPart(name, 1_000, "0" * 64),), AUTO) for name in names]
    fits = [Fit(2_000, 16_000_000_000, 9_000_000_000, "fits") for _ in files]
    return models, files, fits


async def test_hub_repos_and_files_are_literal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DownloadQueue, "_download", lambda self, job: None)
    models, files, fits = hostile_hub()
    manager = FakeManager()
    app = app_over(manager, FakeServer(manager), "hub")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await workers_done(pilot)
        pane = app.query_one(HubPane)
        pane.post_message(HubPane.SearchDone(AUTO, []))
        await workers_done(pilot)
        assert f"No GGUF models match '{AUTO}'." in screen_text(app)
        pane.post_message(HubPane.SearchDone("evil", models))
        pane.post_message(HubPane.FilesListed(models[0].repo_id, files, fits))
        await workers_done(pilot)
        shown = screen_text(app)
        assert models[0].repo_id in shown and models[1].repo_id in shown
        assert files[0].name in shown and files[1].name in shown
        assert f"Files of {models[0].repo_id}"[:40] in shown  # the border title
        pane.post_message(HubPane.FilesListed("evil/empty" + CLOSING, [], []))
        await workers_done(pilot)
        assert f"evil/empty{CLOSING} has no GGUF model files." in screen_text(app)
        pane.post_message(HubPane.FilesListed(models[0].repo_id, files, fits))
        await workers_done(pilot)
        # Downloading: the queue's row, its progress line and its notifications.
        queue = pane.downloads
        queue.add(files[0])
        queue.add(files[1])  # queued: a notification naming it
        progress = DownloadProgress(files[0], files[0].name, 400, 1_000, 100, "downloading")
        queue.post_message(DownloadQueue.Progressed(1, progress))
        await workers_done(pilot)
        shown = screen_text(app)
        row = "  ".join(["1.0 KB", files[0].name])  # Size, File; then the Repository
        assert row in shown and files[0].repo_id in shown
        assert f"{files[0].name}: downloading" in shown
        assert f"Download {files[1].name} queued" in toasts(app)
        await click_text(pilot, "QUITNOW")
        await assert_still_running(pilot)


class FailingRegistry(FakeRegistry):
    """Discovery that fails with a message quoting a stranger's file name."""

    def entries(self) -> list[ModelEntry]:
        return []

    def refresh(self) -> list[ModelEntry]:
        raise ShimmyError("model_invalid", f"Cannot read {CLOSING}", CLICK)


class FailingServer(FakeServer):
    def start(self) -> str:
        raise ShimmyError("invalid_request", f"Cannot bind to '{AUTO}'")


async def test_log_lines_and_notifications_are_literal() -> None:
    manager = FakeManager()
    manager.registry = FailingRegistry()
    handler = DashboardLogHandler()
    handler.records.append((20, f"12:00:00 INFO    uvicorn: GET {CLOSING} 401"))
    app = app_over(manager, FailingServer(manager, running=False), "log", log_handler=handler)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await workers_done(pilot)
        app.post_message(LogRecordPosted(40, f"12:00:01 ERROR   shimmy: {LINK} {CLICK}"))
        app.notify(f"model {CLOSING} is ready", title="Download " + AUTO)
        await workers_done(pilot)
        shown = screen_text(app)
        assert f"GET {CLOSING} 401" in shown and LINK in shown and CLICK in shown  # the Log tab
        notes = toasts(app)
        assert f"Download {AUTO} model {CLOSING} is ready" in notes, notes
        # A server that failed to start, and a failed worker, both quote their error.
        assert any(f"Cannot bind to '{AUTO}'" in note for note in notes), notes
        app.query_one(ModelsPane).action_refresh()
        await workers_done(pilot)
        assert any(f"Cannot read {CLOSING} ({CLICK})" in note for note in toasts(app))
        await click_text(pilot, "QUITNOW")
        await assert_still_running(pilot)


HOSTILE_REPLY = (
    f"Sure: [bold]b[/] {CLICK} {LINK} {AUTO} [/bold] [on red]x[/on red] and **real** Markdown."
)


class HostileChatManager(FakeManager):
    def submit_chat(self, name: str | None, messages: Any, **_: Any) -> FakeGeneration:
        return FakeGeneration(text=HOSTILE_REPLY)


async def test_chat_text_is_literal() -> None:
    manager = HostileChatManager()
    app = app_over(manager, FakeServer(manager), "chat")
    finished: list[str] = []

    def hook(message: object) -> None:
        if isinstance(message, ChatPane.ReplyFinished):
            finished.append(message.text)

    typed = f"Say {CLOSING} {LINK} [@click=app.quit]TYPED[/]"
    async with app.run_test(size=SIZE, notifications=True, message_hook=hook) as pilot:
        await workers_done(pilot)
        pane = app.query_one(ChatPane)
        pane.settings.display = pane.sidebar.display = False  # the reply on one line
        await pilot.press(*typed, "enter")
        await settle(pilot, lambda: finished, 30, what="the download's end")
        await workers_done(pilot)
        user, reply = app.query(ChatMessage)
        assert user.text == typed
        assert reply.markdown.source.strip() == HOSTILE_REPLY
        shown = screen_text(app)
        assert typed in shown
        for piece in ("[bold]b[/]", CLICK, LINK, AUTO, "[/bold]", "[on red]x[/on red]"):
            assert piece in shown, shown
        assert "**real**" not in shown and "real" in shown  # Markdown is still Markdown
        await click_text(pilot, "TYPED")
        await assert_still_running(pilot)
        await click_text(pilot, "QUITNOW")
        await assert_still_running(pilot)


async def test_a_reply_still_streaming_is_literal_too() -> None:
    """While it comes, a reply is drawn by Rich's Markdown, not the Markdown
    widget: console markup in it stays text there as well."""
    manager = HostileChatManager()
    app = app_over(manager, FakeServer(manager), "chat")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await workers_done(pilot)
        pane = app.query_one(ChatPane)
        pane.settings.display = pane.sidebar.display = False  # the reply on one line
        reply = ChatMessage("assistant")
        await pane.query_one(ChatLog).mount(reply)
        reply.stream_text(HOSTILE_REPLY)
        await pilot.pause()
        shown = screen_text(app)
        for piece in ("[bold]b[/]", CLICK, LINK, AUTO, "[/bold]", "[on red]x[/on red]"):
            assert piece in shown, shown
        assert "**real**" not in shown and "real" in shown
        await click_text(pilot, "QUITNOW")
        await assert_still_running(pilot)
