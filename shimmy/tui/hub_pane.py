"""The Hub tab: search Hugging Face for GGUF repositories, list a repository's
model files with whether each fits this machine, and queue downloads.

Searching and listing call the hub, so they run in thread workers (one of each
at a time: a new search replaces a running one) and report back with messages.
A failure (offline, an unknown repository) becomes a notification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Key
from textual.message import Message
from textual.widgets import DataTable, Input, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from shimmy.errors import ShimmyError
from shimmy.tui.backend import DashboardBackend
from shimmy.tui.download_queue import DownloadQueue
from shimmy.tui.plain import plain
from shimmy.units import format_bytes, format_count, format_params

if TYPE_CHECKING:
    from shimmy.models.hub import Fit, HubFile, HubModel

SEARCH_LIMIT = 30
SORTS = [("most downloads", "downloads"), ("most likes", "likes"), ("recently updated", "updated")]
FIT_STYLES = {
    "fits": ("fits", "green"),
    "tight": ("tight", "yellow"),
    "too_large": ("too large", "red"),
}
HINT = "Type words and press Enter to search Hugging Face for GGUF models."


def repo_cells(model: HubModel) -> tuple[Text | str, ...]:
    """A search result as the results table shows it (the hub's names are literal)."""
    return (
        plain(model.repo_id),
        Text(format_params(model.parameters) if model.parameters else "-", justify="right"),
        Text(format_count(model.downloads), justify="right"),
        Text(format_count(model.likes), justify="right"),
        model.last_modified.date().isoformat() if model.last_modified else "-",
    )


def local_cell(file: HubFile, kept: int) -> Text:
    """What of ``file`` this machine has: all of it, part of an earlier pull, or none."""
    if kept >= file.size:
        return Text("on disk", style="bold green")
    if kept > 0:
        return Text(f"{kept * 100 // file.size}% kept", style="yellow")
    return Text("-", style="dim")


def file_cells(file: HubFile, fit: Fit, kept: int = 0) -> tuple[Text, ...]:
    """A repository's model file as the files table shows it (names are literal);
    ``kept``: the bytes of it already on disk."""
    word, style = FIT_STYLES[fit.verdict]
    return (
        plain(file.quantization or "-"),
        Text(format_bytes(file.size), justify="right"),
        Text(str(len(file.parts)), justify="right"),
        Text(word, style=style),
        local_cell(file, kept),
        plain(file.name),
    )


class HubPane(Vertical):
    """Search box, results, the selected repository's files, and the downloads."""

    BINDINGS = [
        Binding("slash", "focus_search", "Search", tooltip="Search Hugging Face for GGUF models"),
        Binding("d", "download", "Download", tooltip="Download the selected file"),
        Binding("c", "cancel", "Cancel", tooltip="Cancel the selected download"),
        Binding("x", "cancel_all", "Cancel all", tooltip="Cancel every download"),
        # Not a letter: the search box takes letters, and this clears no file.
        Binding(
            "delete",
            "clear_downloads",
            "Clear list",
            tooltip="Clear finished downloads from the list",
        ),
    ]

    @dataclass
    class SearchDone(Message):
        query: str
        models: list[HubModel]

    @dataclass
    class FilesListed(Message):
        repo_id: str
        files: list[HubFile]
        fits: list[Fit]  # the Fit of each file, taken in the worker
        kept: list[int] | None = None  # bytes of each already on disk (None: none)

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, manager: DashboardBackend, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager = manager
        self.models: list[HubModel] = []
        self.repo_id: str | None = None
        self.files: list[HubFile] = []
        self.fits: list[Fit] = []
        self.kept: list[int] = []  # bytes of each listed file on this machine
        self._query: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="hub-search-row"):
            yield Input(
                placeholder="Search Hugging Face for GGUF models: type words, then Enter",
                id="hub-query",
                compact=True,
                select_on_focus=False,
            )
            yield Select(SORTS, value="downloads", allow_blank=False, id="hub-sort", compact=True)
        with Vertical(id="hub-body"):
            results: DataTable[Text | str] = DataTable(id="hub-results", cursor_type="row")
            results.border_title = "Repositories"
            yield results
            files: DataTable[Text] = DataTable(id="hub-files", cursor_type="row")
            files.border_title = "Files"
            yield files
        yield Static(Text(HINT, style="dim"), id="hub-status")
        yield DownloadQueue(self.manager, id="hub-downloads")

    def on_mount(self) -> None:
        results = self.query_one("#hub-results", DataTable)
        for column in ("Repository", "Params", "Downloads", "Likes", "Updated"):
            results.add_column(column, key=column.lower())
        files = self.query_one("#hub-files", DataTable)
        for column in ("Quant", "Size", "Parts", "Fit", "Local", "File"):
            files.add_column(column, key=column.lower())

    def focus_default(self) -> None:
        if self.models:
            self.query_one("#hub-results", DataTable).focus()
        else:
            self.query_one("#hub-query", Input).focus()

    @property
    def downloads(self) -> DownloadQueue:
        return self.query_one(DownloadQueue)

    def _status(self, text: str | Text) -> None:
        """Show ``text`` below the tables; a ``str`` is literal (it quotes the query
        and the hub's names)."""
        self.query_one("#hub-status", Static).update(plain(text) if isinstance(text, str) else text)

    # -- search ----------------------------------------------------------------------

    @on(Input.Submitted, "#hub-query")
    def _query_submitted(self, event: Input.Submitted) -> None:
        self.start_search(event.value.strip())

    @on(Select.Changed, "#hub-sort")
    def _sort_changed(self) -> None:
        if self._query is not None:
            self.start_search(self._query)

    def start_search(self, query: str) -> None:
        """Search the hub for ``query`` in the chosen order."""
        self._query = query
        sort = str(self.query_one("#hub-sort", Select).value)
        self._status(Text(f"Searching for '{query}'…" if query else "Searching…", style="italic"))
        self.search(query, sort)

    @work(
        thread=True,
        exclusive=True,
        group="hub-search",
        exit_on_error=False,
        description="Hub search",
    )
    def search(self, query: str, sort: str) -> None:
        from shimmy.models.hub import search_models

        models = search_models(query, limit=SEARCH_LIMIT, sort=sort)
        if not get_current_worker().is_cancelled:  # a newer search replaced this one
            self.post_message(self.SearchDone(query, models))

    @on(SearchDone)
    def _search_done(self, message: SearchDone) -> None:
        self.models = message.models
        table = self.query_one("#hub-results", DataTable)
        table.clear()
        for model in self.models:
            table.add_row(*repo_cells(model), key=model.repo_id)
        if not self.models:
            self._status(f"No GGUF models match '{message.query}'.")
            return
        self._status(
            Text(f"{len(self.models)} repositories. Enter lists a repository's files.", style="dim")
        )
        table.focus()

    # -- a repository's files -------------------------------------------------------------

    @on(DataTable.RowSelected, "#hub-results")
    def _repo_selected(self, event: DataTable.RowSelected) -> None:
        repo_id = str(event.row_key.value)
        self._status(Text(f"Listing the files of {repo_id}…", style="italic"))
        self.list_files(repo_id)

    @work(
        thread=True, exclusive=True, group="hub-files", exit_on_error=False, description="Hub files"
    )
    def list_files(self, repo_id: str) -> None:
        """List the GGUF files of ``repo_id`` and how each fits this machine's memory."""
        from shimmy.models.hub import list_gguf_files, on_disk, partial_bytes

        files = list_gguf_files(repo_id)
        fits = [f.fit() for f in files]
        kept = [f.size if on_disk(f) else partial_bytes(f) for f in files]
        if not get_current_worker().is_cancelled:  # another repository was picked since
            self.post_message(self.FilesListed(repo_id, files, fits, kept))

    @on(FilesListed)
    def _files_listed(self, message: FilesListed) -> None:
        self.repo_id, self.files, self.fits = message.repo_id, message.files, message.fits
        self.kept = message.kept or [0] * len(message.files)
        table = self.query_one("#hub-files", DataTable)
        table.border_title = plain(f"Files of {message.repo_id}")
        table.clear()
        for i, (file, fit, kept) in enumerate(zip(self.files, self.fits, self.kept, strict=True)):
            table.add_row(*file_cells(file, fit, kept), key=str(i))
        if not self.files:
            self._status(f"{message.repo_id} has no GGUF model files.")
            return
        table.focus()
        self._describe_file()

    @on(DataTable.RowHighlighted, "#hub-files")
    def _file_highlighted(self) -> None:
        self._describe_file()

    def selected_file(self) -> HubFile | None:
        table = self.query_one("#hub-files", DataTable)
        if not self.files or table.row_count == 0:
            return None
        row = table.cursor_row
        return self.files[row] if 0 <= row < len(self.files) else None

    def _describe_file(self) -> None:
        table = self.query_one("#hub-files", DataTable)
        row = table.cursor_row
        if not self.files or not 0 <= row < len(self.fits):
            return
        file, fit = self.files[row], self.fits[row]
        self._status(Text(f"{file.name}: {fit.describe()}. Press d to download it.", style="dim"))

    # -- keys ------------------------------------------------------------------------------

    def action_focus_search(self) -> None:
        self.query_one("#hub-query", Input).focus()

    def on_key(self, event: Key) -> None:
        field = self.query_one("#hub-query", Input)
        if field.has_focus and event.key == "down" and self.models:
            event.stop()
            self.query_one("#hub-results", DataTable).focus()

    def action_download(self) -> None:
        """Queue the highlighted file of the listed repository (not one on disk)."""
        file = self.selected_file()
        if file is None:
            self.notify("Pick a repository and one of its files first", severity="warning")
            return
        row = self.files.index(file)
        if self.kept[row] >= file.size:
            self.notify(f"{file.name} is already on disk: see the Models tab")
            return
        self.downloads.add(file)

    @on(DownloadQueue.Finished)
    def _download_finished(self, message: DownloadQueue.Finished) -> None:
        # A file listed here that is now whole is marked so (the message goes on
        # to the app, which lists the new model).
        job = self.downloads.job(message.job_id)
        if message.state != "done" or job is None or job.file not in self.files:
            return
        row = self.files.index(job.file)
        self.kept[row] = job.file.size
        table = self.query_one("#hub-files", DataTable)
        table.update_cell(str(row), "local", local_cell(job.file, job.file.size))

    def action_clear_downloads(self) -> None:
        cleared = self.downloads.clear_finished()
        self.notify(f"{cleared} finished download(s) cleared" if cleared else "Nothing to clear")

    def action_cancel(self) -> None:
        if not self.downloads.cancel_current():
            self.notify("No download is running")

    def action_cancel_all(self) -> None:
        stopped = self.downloads.cancel_all()
        self.notify(f"{stopped} download(s) stopped" if stopped else "No download to stop")

    # -- failures ----------------------------------------------------------------------------

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        # Worker.StateChanged does not bubble: the app never sees this pane's workers.
        if event.state != WorkerState.ERROR or event.worker.group not in (
            "hub-search",
            "hub-files",
        ):
            return
        error = event.worker.error
        text = (
            error.one_line()
            if isinstance(error, ShimmyError)
            else f"{type(error).__name__}: {error}"
        )
        self._status(Text(text, style="red"))
        self.notify(text, title=event.worker.description, severity="error", timeout=10)
