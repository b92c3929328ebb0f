"""The Hub tab's downloads: a queue of model files fetched one at a time, with a
live progress bar for the one being fetched.

The list shows the newest first and keeps the running download in sight (it
ran oldest first, so after five rows the active or failed one was out of
view). A file has one row: asking again for a file that was cancelled or
failed resumes that row; one already downloaded is not fetched again. Rows of
finished downloads can be cleared.

Each download runs in a thread worker that calls ``shimmy.models.hub.download``;
its progress callback (about ten times a second, on the worker thread) only
posts messages, and those merge in the queue so the screen never falls behind.
When a file is in place the worker runs discovery again, so the model is listed
on the Models tab at once, and names it.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

from shimmy.errors import ShimmyError
from shimmy.tui.backend import DashboardBackend
from shimmy.tui.plain import plain
from shimmy.tui.tables import sync_rows
from shimmy.units import format_bytes, format_time_left

if TYPE_CHECKING:
    from shimmy.models.hub import DownloadProgress, HubFile

JobState = Literal["queued", "downloading", "done", "cancelled", "failed"]
FINISHED: frozenset[JobState] = frozenset({"done", "cancelled", "failed"})
DOWNLOAD_GROUP = "hub-download"
STATE_STYLES = {
    "queued": "dim",
    "downloading": "yellow",
    "done": "bold green",
    "cancelled": "dim italic",
    "failed": "red",
}


@dataclass
class DownloadJob:
    """One file the user asked for, and where its download stands."""

    id: int
    file: HubFile
    revision: str = "main"
    state: JobState = "queued"
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: DownloadProgress | None = None  # the last one reported
    model_name: str | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.file.repo_id}/{self.file.name}"


def progress_line(progress: DownloadProgress) -> str:
    """ "downloading 45.1 MB / 98.4 MB · 20.3 MB/s · ETA 3s" """
    speed = f"{format_bytes(progress.bytes_per_second)}/s" if progress.bytes_per_second else "-"
    return (
        f"{progress.phase} {format_bytes(progress.done)} / {format_bytes(progress.total)}"
        f" · {speed} · ETA {format_time_left(progress.eta_seconds)}"
    )


class DownloadQueue(Vertical):
    """Downloads run one at a time, in the order they were asked for; the list
    shows the newest first."""

    DEFAULT_CSS = """
    DownloadQueue {
        height: auto;
        border: round $secondary 50%;
        padding: 0 1;
    }
    DownloadQueue > DataTable {
        height: auto;
        max-height: 6;
        overflow-x: hidden;  /* a long repository name is cut, not scrolled to */
    }
    DownloadQueue > #download-line {
        height: 1;
        margin-top: 1;
    }
    DownloadQueue > ProgressBar {
        height: 1;
    }
    """

    @dataclass
    class Progressed(Message, bubble=False):
        """A download moved on; a newer one for the same job replaces an unhandled one."""

        job_id: int
        progress: DownloadProgress

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, DownloadQueue.Progressed) and message.job_id == self.job_id

    @dataclass
    class Finished(Message):
        """A download ended: ``done`` (with the model's name), ``cancelled`` or ``failed``."""

        job_id: int
        state: JobState
        model_name: str | None = None
        error: str | None = None

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, manager: DashboardBackend, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager = manager
        self.jobs: list[DownloadJob] = []
        self.current: DownloadJob | None = None
        self._ids = itertools.count(1)

    def compose(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(id="download-table", cursor_type="row")
        table.can_focus = False
        yield table
        yield Static("", id="download-line")
        yield ProgressBar(total=None, show_eta=False, id="download-bar")

    def on_mount(self) -> None:
        self.border_title = "Downloads"
        table = self.query_one(DataTable)
        # State first: a long file name must never push it off a narrow screen.
        table.add_column("State", key="state")
        table.add_column("Size", key="size")
        table.add_column("File", key="file")
        table.add_column("Repository", key="repo")
        self.display = False  # until the first download is asked for

    def on_unmount(self) -> None:
        # Quitting stops a download at once (its partial file stays for next time).
        for job in self.jobs:
            job.cancel.set()

    # -- the queue -----------------------------------------------------------------

    def add(self, file: HubFile, revision: str = "main") -> DownloadJob | None:
        """Queue ``file``; it starts when the downloads before it have ended. A file
        asked for before keeps its one row: cancelled or failed, it is queued again
        (and resumes what it kept); queued, running or done, nothing changes."""
        label = f"{file.repo_id}/{file.name}"
        job = next((j for j in self.jobs if j.label == label), None)
        if job is not None and job.state == "done":
            self.notify(f"{file.name} is already downloaded, as {job.model_name}")
            return None
        if job is not None and job.state in ("queued", "downloading"):
            self.notify(f"{file.name} is already {job.state}", severity="warning")
            return None
        if job is None:
            job = DownloadJob(next(self._ids), file, revision)
        else:  # again, as the newest: its row moves to the top
            self.jobs.remove(job)
            job.state, job.progress, job.error = "queued", None, None
            job.cancel = threading.Event()
        self.display = True
        self.jobs.append(job)
        self._show_all()
        if self.current is not None:
            self.notify(f"{file.name} queued", title="Download")
        self._start_next()
        return job

    def clear_finished(self) -> int:
        """Drop the rows of downloads that ended (done, cancelled, failed); how many."""
        ended = [j for j in self.jobs if j.state in FINISHED]
        self.jobs = [j for j in self.jobs if j.state not in FINISHED]
        self._show_all()
        if not self.jobs:
            self.display = False
            self.query_one("#download-line", Static).update("")
        return len(ended)

    def pending(self) -> list[DownloadJob]:
        return [j for j in self.jobs if j.state in ("queued", "downloading")]

    def cancel_current(self) -> bool:
        """Stop the running download (the next queued one starts); False when none runs."""
        if self.current is None:
            return False
        self.current.cancel.set()
        return True

    def cancel_all(self) -> int:
        """Stop the running download and drop every queued one; how many were stopped."""
        stopped = 0
        for job in self.jobs:
            if job.state == "queued":
                job.state = "cancelled"
                self._show(job)
                stopped += 1
        return stopped + self.cancel_current()

    def _start_next(self) -> None:
        if self.current is not None:
            return
        job = next((j for j in self.jobs if j.state == "queued"), None)
        if job is None:
            return
        self.current = job
        job.state = "downloading"
        self._show(job)
        self.query_one(ProgressBar).update(total=job.file.size, progress=0)
        self.query_one("#download-line", Static).update(
            Text(f"{job.file.name}: starting…", style="italic")
        )
        self._download(job)

    @work(thread=True, group=DOWNLOAD_GROUP, exit_on_error=False, description="download")
    def _download(self, job: DownloadJob) -> None:
        from shimmy.models import hub

        worker = get_current_worker()

        def report(progress: DownloadProgress) -> None:
            if worker.is_cancelled:  # the app is closing
                job.cancel.set()
            self.post_message(self.Progressed(job.id, progress))

        try:
            plan = hub.plan_pull(
                hub.PullSpec(job.file.repo_id, filename=job.file.name, revision=job.revision),
                files=[job.file],
            )
            path = hub.download(
                plan.file, revision=plan.revision, progress=report, cancel=job.cancel
            )
        except hub.DownloadCancelled:
            self.post_message(self.Finished(job.id, "cancelled"))
            return
        except ShimmyError as exc:
            self.post_message(self.Finished(job.id, "failed", error=exc.one_line()))
            return
        name = hub.registered_name(self.manager.registry.refresh(), path)
        self.post_message(self.Finished(job.id, "done", model_name=name or str(path)))

    # -- what the worker reports -----------------------------------------------------

    def job(self, job_id: int) -> DownloadJob | None:
        """The job of this id, while it has a row."""
        return next((j for j in self.jobs if j.id == job_id), None)

    @on(Progressed)
    def _progressed(self, message: Progressed) -> None:
        job = self.job(message.job_id)
        if job is None or job.state != "downloading":
            return
        job.progress = message.progress
        self._show(job)
        self.query_one(ProgressBar).update(
            total=message.progress.total, progress=message.progress.done
        )
        self.query_one("#download-line", Static).update(
            Text(f"{job.file.name}: {progress_line(message.progress)}")
        )

    @on(Finished)
    def _finished(self, message: Finished) -> None:
        job = self.job(message.job_id)
        if job is None:
            return
        self._end(job, message.state, message.model_name, message.error)
        # The message goes on to the app, which lists the new model.

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        # A failure that is no ShimmyError (a bug): free the queue and say so.
        if event.worker.group != DOWNLOAD_GROUP or event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if self.current is not None:
            self._end(self.current, "failed", None, f"{type(error).__name__}: {error}")

    def _end(
        self, job: DownloadJob, state: JobState, model_name: str | None, error: str | None
    ) -> None:
        job.state, job.model_name, job.error = state, model_name, error
        self._show(job)
        line = self.query_one("#download-line", Static)
        if state == "done":
            self.query_one(ProgressBar).update(total=job.file.size, progress=job.file.size)
            # download() returns only once every part was hashed against the hub's hash.
            verified = f"{job.file.checksums} verified"
            line.update(
                Text(f"{job.file.name}: downloaded as {model_name}, {verified}", style="green")
            )
            self.notify(
                f"{model_name} is ready: see the Models tab, chat with it on the Chat tab",
                title="Download finished",
            )
        elif state == "cancelled":
            line.update(
                Text(f"{job.file.name}: cancelled; download it again to resume", style="italic")
            )
            self.notify(
                f"{job.file.name}: cancelled, the part downloaded is kept", title="Download"
            )
        else:
            line.update(Text(f"{job.file.name}: {error}", style="red"))
            self.notify(error or "failed", title="Download failed", severity="error", timeout=10)
        if self.current is job:
            self.current = None
        self._start_next()

    def _state(self, job: DownloadJob) -> Text:
        if job.state == "downloading" and job.progress is not None:
            text = f"{job.progress.phase} {job.progress.fraction * 100:.0f}%"
        elif job.state == "done":
            text = f"done: {job.model_name}"
        elif job.state == "failed":
            text = "failed"
        else:
            text = job.state
        return Text(text, style=STATE_STYLES[job.state])

    def _show(self, job: DownloadJob) -> None:
        table = self.query_one(DataTable)
        if str(job.id) in table.rows:
            table.update_cell(str(job.id), "state", self._state(job), update_width=True)
        self._follow()

    def _show_all(self) -> None:
        """Every job a row, the newest first (the hub's names literal)."""
        rows = [
            (
                str(job.id),
                (
                    self._state(job),
                    Text(format_bytes(job.file.size), justify="right"),
                    plain(job.file.name),
                    plain(job.file.repo_id),
                ),
            )
            for job in reversed(self.jobs)
        ]
        sync_rows(self.query_one(DataTable), rows)
        self._follow()

    def _follow(self) -> None:
        """Keep the running download in view (else the newest row, at the top)."""
        table = self.query_one(DataTable)
        key = str(self.current.id) if self.current is not None else None
        if key is not None and key in table.rows:
            row = table.get_row_index(key)
            if row != table.cursor_row:
                table.move_cursor(row=row, animate=False)
