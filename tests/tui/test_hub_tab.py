"""The Hub tab as a daily user meets it (issue 15): the downloads list shows the
newest first and keeps the running one in sight, a resumed download says so, a
file asked for twice has one row, the files on disk are marked, finished rows
can be cleared, and the State column survives 90 columns. Over fakes: no hub
and no real download (``DownloadQueue._download`` holds every job where it is,
and the tests post what the download worker would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from shimmy.models import hub
from shimmy.models.hub import PARTIAL_SUFFIX, HubFile, HubPart, repo_storage
from shimmy.tui.app import ShimmyApp
from shimmy.tui.download_queue import DownloadQueue
from shimmy.tui.hub_pane import HubPane
from tests.tui.fakes import HUB_FILES, HUB_FITS, HUB_MODELS, FakeManager, FakeServer
from tests.tui.test_markup import screen_text
from tests.waiting import settle

pytestmark = pytest.mark.anyio

REPO = HUB_MODELS[0].repo_id


@pytest.fixture(autouse=True)
def held_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A download starts and stays where it is until a test posts its end."""
    monkeypatch.setattr(DownloadQueue, "_download", lambda self, job: None)


def hub_file(name: str, size: int = 1_000, sha: str = "0" * 64) -> HubFile:
    return HubFile(REPO, name, (HubPart(name, size, sha),), hub.quantization_of(name))


def app_on_hub() -> ShimmyApp:
    manager = FakeManager()
    server = FakeServer(manager)
    return ShimmyApp(manager, server, serve=False, stats_interval=0, initial_tab="hub")


async def queue_of(pilot: Pilot[Any]) -> DownloadQueue:
    await pilot.pause()
    return pilot.app.query_one(HubPane).downloads


def states(queue: DownloadQueue) -> list[tuple[str, str]]:
    """(state, file) of each row, top to bottom."""
    table = queue.query_one(DataTable)
    rows = [table.get_row_at(i) for i in range(table.row_count)]
    return [(str(row[0]), str(row[2])) for row in rows]


async def end(pilot: Pilot[Any], queue: DownloadQueue, state: str, name: str = "") -> None:
    """The running download ends as its worker would say."""
    assert queue.current is not None
    queue.post_message(DownloadQueue.Finished(queue.current.id, state, model_name=name))  # type: ignore[arg-type]
    await pilot.pause()


async def test_newest_first_and_the_running_one_in_sight() -> None:
    app = app_on_hub()
    files = [hub_file(f"model-{i}-Q4_K_M.gguf") for i in range(8)]
    async with app.run_test(size=(120, 40)) as pilot:
        queue = await queue_of(pilot)
        for file in files:
            queue.add(file)
        await pilot.pause()
        assert [f for _, f in states(queue)] == [f.name for f in reversed(files)]
        table = queue.query_one(DataTable)
        # The running one (the oldest) is the last row, scrolled to.
        assert states(queue)[-1] == ("downloading", files[0].name)
        assert table.cursor_row == len(files) - 1
        assert "downloading" in screen_text(app)
        for i in range(6):  # six finish; the seventh runs, still in sight
            await end(pilot, queue, "done", f"model-{i}")
        assert queue.current is not None and queue.current.file == files[6]
        await settle(pilot, lambda: "downloading" in screen_text(app), what="the running row")
        assert files[6].name in screen_text(app)


async def test_a_resumed_download_has_one_row_that_says_so() -> None:
    app = app_on_hub()
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        queue = await queue_of(pilot)
        file, other = hub_file("a-Q4_K_M.gguf"), hub_file("b-Q8_0.gguf")
        queue.add(file)
        queue.add(other)
        await end(pilot, queue, "cancelled")
        assert states(queue) == [("downloading", other.name), ("cancelled", file.name)]
        assert queue.add(file) is not None  # again: the same row, queued, on top
        await pilot.pause()
        assert states(queue) == [("queued", file.name), ("downloading", other.name)]
        await end(pilot, queue, "done", "b")
        assert states(queue)[0] == ("downloading", file.name)
        await end(pilot, queue, "done", "a")
        assert queue.add(file) is None  # downloaded: no second row, and it says so
        await pilot.pause()
        assert [f for _, f in states(queue)] == [file.name, other.name]
        assert any("already downloaded, as a" in n.message for n in app._notifications)


async def test_finished_rows_can_be_cleared() -> None:
    app = app_on_hub()
    async with app.run_test(size=(120, 40)) as pilot:
        queue = await queue_of(pilot)
        files = [hub_file(f"m{i}-Q4_K_M.gguf") for i in range(4)]
        for file in files:
            queue.add(file)
        await end(pilot, queue, "done", "m0")
        await end(pilot, queue, "failed")
        await end(pilot, queue, "cancelled")
        app.query_one("#hub-results").focus()
        await pilot.press("delete")
        await pilot.pause()
        assert states(queue) == [("downloading", files[3].name)]
        await end(pilot, queue, "done", "m3")
        await pilot.press("delete")
        await pilot.pause()
        assert not queue.jobs and not queue.display


async def test_the_files_table_marks_what_is_on_disk(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, kept, absent = (
        hub_file(f"{q}.gguf", 1_000, c * 64)
        for q, c in zip(("whole-Q4_K_M", "kept-Q5_K_M", "absent-Q8_0"), "abc", strict=True)
    )
    blobs = repo_storage(REPO) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / ("a" * 64)).write_bytes(b"x" * 1_000)
    (blobs / ("b" * 64 + PARTIAL_SUFFIX)).write_bytes(b"x" * 400)
    assert hub.on_disk(whole) and not hub.on_disk(kept) and not hub.on_disk(absent)
    monkeypatch.setattr(hub, "list_gguf_files", lambda repo_id: [whole, kept, absent])
    app = app_on_hub()
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        pane = app.query_one(HubPane)
        await pilot.pause()
        pane.list_files(REPO)
        files = app.query_one("#hub-files", DataTable)
        await settle(pilot, lambda: files.row_count == 3, what="the files")
        column = [str(files.get_row_at(i)[4]) for i in range(3)]
        assert column == ["on disk", "40% kept", "-"]
        files.move_cursor(row=0)
        await pilot.press("d")  # on disk already: no download
        await pilot.pause()
        assert not pane.downloads.jobs
        assert any("already on disk" in n.message for n in app._notifications)
        files.move_cursor(row=1)
        await pilot.press("d")
        await pilot.pause()
        (job,) = pane.downloads.jobs
        await end(pilot, pane.downloads, "done", "kept")  # marked once it is whole
        assert str(files.get_row_at(1)[4]) == "on disk"


@pytest.mark.parametrize("size", [(90, 30), (80, 24)])
async def test_the_state_column_stays_on_narrow_screens(size: tuple[int, int]) -> None:
    app = app_on_hub()
    async with app.run_test(size=size) as pilot:
        pane = app.query_one(HubPane)
        pane.post_message(HubPane.FilesListed(REPO, HUB_FILES, HUB_FITS))
        queue = await queue_of(pilot)
        queue.add(HUB_FILES[0])
        queue.add(HUB_FILES[1])
        await end(pilot, queue, "done", "smollm2-135m-instruct-iq4_xs")
        await pilot.pause()
        shown = screen_text(app)
        assert "done: smollm2-135m-instruct-iq4_xs" in shown, shown
        assert "downloading" in shown, shown
