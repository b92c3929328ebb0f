"""The Log tab: no line per hub HTTP request, lines wrapped at the width the tab has
(also those logged while it was hidden, and again after a resize), what the
dashboard did (the server, downloads), and its level and text filters."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from textual.widgets import Input, Select

from shimmy.api.server_control import ServerControl
from shimmy.models.manager import ModelManager
from shimmy.tui.app import ShimmyApp
from shimmy.tui.download_queue import DownloadJob, DownloadQueue
from shimmy.tui.log_pane import LogPane, LogView
from shimmy.tui.logsink import CHATTY_LIBRARIES, DashboardLogHandler
from tests.tui.apps import make_app
from tests.tui.fakes import HUB_FILES, FakeManager, FakeServer
from tests.waiting import settle

pytestmark = pytest.mark.anyio

LONG = " ".join(f"word{i:03d}" for i in range(60))  # 479 characters


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": name, "levelno": level, "levelname": logging.getLevelName(level), "msg": message}
    )


def on_screen(view: LogView) -> list[str]:
    return [strip.text.rstrip() for strip in view.lines]


@pytest.fixture
def handler() -> Iterator[DashboardLogHandler]:
    """The dashboard's sink, on shimmy's loggers for the test (not the root's)."""
    sink = DashboardLogHandler()
    shimmy_log = logging.getLogger("shimmy")
    level = shimmy_log.level
    shimmy_log.addHandler(sink)
    shimmy_log.setLevel(logging.INFO)
    yield sink
    shimmy_log.removeHandler(sink)
    shimmy_log.setLevel(level)


def fake_dashboard(handler: DashboardLogHandler, tab: str = "log") -> ShimmyApp:
    manager = FakeManager()
    return ShimmyApp(
        manager, FakeServer(manager), stats_interval=0, initial_tab=tab, log_handler=handler
    )


def test_hub_http_requests_are_not_logged_but_their_failures_are() -> None:
    import huggingface_hub

    sink = DashboardLogHandler()
    # The client huggingface_hub makes its requests with logs "HTTP Request: ..."
    # at INFO under its package's name.
    client_package = type(huggingface_hub.get_session()).__module__.partition(".")[0]
    assert client_package in CHATTY_LIBRARIES
    request = 'HTTP Request: GET https://huggingface.co/api/models?search=qwen "HTTP/1.1 200 OK"'
    for name in (client_package, "httpx", "huggingface_hub.utils._http", "filelock"):
        sink.handle(record(name, logging.INFO, request))
    assert sink.backlog() == []
    sink.handle(record(client_package, logging.WARNING, "Retrying in 1s"))
    sink.handle(record("shimmy.models.hub", logging.INFO, "found 3 repositories"))
    assert [text.split(": ", 1)[1] for _, text in sink.backlog()] == [
        "Retrying in 1s",
        "found 3 repositories",
    ]


async def test_lines_logged_while_hidden_wrap_to_the_width_and_again_after_a_resize(
    handler: DashboardLogHandler,
) -> None:
    app = fake_dashboard(handler)
    async with app.run_test(size=(160, 30)) as pilot:
        view = app.query_one(LogView)
        await settle(pilot, lambda: view.showing)
        await pilot.press("f2")  # the Log tab is hidden while the line is logged
        await settle(pilot, lambda: not view.showing)
        logging.getLogger("shimmy.test").info("%s", LONG)
        await pilot.press("f5")
        width = view.scrollable_content_region.width
        await settle(pilot, lambda: any("word059" in line for line in on_screen(view)))
        lines = on_screen(view)
        assert max(len(line) for line in lines) > 100  # not RichLog's 78 columns
        assert all(len(line) <= width for line in lines)
        await pilot.resize_terminal(90, 30)
        narrower = await settle(
            pilot,
            lambda: (
                0 < view.scrollable_content_region.width < width
                and view.scrollable_content_region.width
            ),
        )
        await settle(pilot, lambda: max(len(line) for line in on_screen(view)) <= narrower)
        # Every word is still there: wrapped again, not cut.
        assert " ".join(" ".join(on_screen(view)).split()).endswith(LONG)


async def test_level_and_text_filters(handler: DashboardLogHandler) -> None:
    app = fake_dashboard(handler)
    async with app.run_test(size=(160, 30)) as pilot:
        view = app.query_one(LogView)
        await settle(pilot, lambda: view.showing)
        log = logging.getLogger("shimmy.test")
        log.info("loaded alpha")
        log.warning("slow beta")
        log.error("failed gamma")
        await settle(pilot, lambda: any("gamma" in line for line in on_screen(view)))
        app.query_one("#log-level", Select).value = logging.WARNING
        await settle(pilot, lambda: not any("alpha" in line for line in on_screen(view)))
        assert any("beta" in line for line in on_screen(view))
        await pilot.press("/")
        field = app.query_one("#log-filter", Input)
        assert field.has_focus
        await pilot.press(*"GAMMA")
        await settle(pilot, lambda: not any("beta" in line for line in on_screen(view)))
        assert any("failed gamma" in line for line in on_screen(view))
        # A line logged now obeys the filters too.
        log.error("failed gamma again")
        log.error("failed delta")
        await settle(pilot, lambda: any("gamma again" in line for line in on_screen(view)))
        assert not any("delta" in line for line in on_screen(view))
        field.value = ""
        app.query_one("#log-level", Select).value = logging.NOTSET
        await settle(pilot, lambda: any("alpha" in line for line in on_screen(view)))
        assert len(app.query_one(LogPane).records) == 6  # the server started, and these


async def test_server_start_stop_and_a_port_in_use_are_logged(
    manager: ModelManager, handler: DashboardLogHandler
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    server = ServerControl(manager, "127.0.0.1", taken.getsockname()[1])
    app = make_app(manager, server, initial_tab="server", log_handler=handler)

    def logged(text: str) -> bool:
        return any(text in line for _, line in handler.backlog())

    try:
        async with app.run_test() as pilot:
            await settle(pilot, lambda: logged("API server not started"), what="the refusal")
            assert logged("already in use")
            app.query_one("#bind-input", Input).value = "127.0.0.1:0"
            await pilot.click("#server-start")
            await settle(pilot, lambda: logged("API server listening on http://127.0.0.1:"))
            app.query_one("#request-log").focus()
            await pilot.press("s")
            await settle(pilot, lambda: logged("API server off"))
            await pilot.press("f5")
            view = app.query_one(LogView)
            await settle(pilot, lambda: any("API server off" in line for line in on_screen(view)))
    finally:
        taken.close()
        server.stop()


async def test_download_results_are_logged(handler: DashboardLogHandler) -> None:
    app = fake_dashboard(handler, tab="hub")
    async with app.run_test(size=(160, 40)) as pilot:
        queue = app.query_one(DownloadQueue)
        file = HUB_FILES[0]
        queue.jobs.extend([DownloadJob(1, file), DownloadJob(2, file)])
        queue.post_message(DownloadQueue.Finished(1, "done", model_name="smollm2-q4"))
        queue.post_message(DownloadQueue.Finished(2, "failed", error="disk full"))

        def lines() -> list[str]:
            return [text for _, text in handler.backlog()]

        await settle(pilot, lambda: len(lines()) >= 2)
        assert f"downloaded {file.repo_id}/{file.name}: smollm2-q4" in lines()[0]
        assert f"download of {file.repo_id}/{file.name} failed: disk full" in lines()[1]
