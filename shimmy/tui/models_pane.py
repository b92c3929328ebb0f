"""The Models tab: every discovered model, filterable, with actions and a probe panel.

Letters on the table are actions (p, l, u, d, r, x) and only ever actions: the
filter is a box that ``/`` focuses, where every key is text. Typing straight
onto the table used to start a filter unless the letter was an action's, so
"phi" probed and then filtered "hi".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.events import Key
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Input, Static
from textual.worker import Worker

from shimmy.errors import ShimmyError
from shimmy.tui.backend import DashboardBackend
from shimmy.tui.dialogs import ConfirmScreen
from shimmy.tui.failures import notify_if_failed
from shimmy.tui.messages import ModelsChanged
from shimmy.tui.model_columns import COLUMNS, content_widths, fit_columns, model_cells
from shimmy.tui.plain import plain
from shimmy.units import format_bytes, format_params

if TYPE_CHECKING:
    from shimmy.models.probe import ProbeReport
    from shimmy.models.registry import ModelEntry


def probe_table(report: ProbeReport) -> Table:
    """A probe report as two columns, as `shimmy probe` prints it."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    speed = f"{report.tokens_per_second:.1f} tok/s" if report.tokens_per_second else "-"
    ttft = f"{report.time_to_first_token * 1000:.0f} ms" if report.time_to_first_token else "-"
    rows = [
        (
            "load time",
            f"{report.load_seconds:.2f} s" + (" (was loaded)" if report.was_loaded else ""),
        ),
        ("memory", format_bytes(report.memory_bytes)),
        ("context", f"{report.n_ctx} tokens"),
        ("first token", ttft),
        ("generation", f"{report.completion_tokens} tokens at {speed}"),
        ("chat template", "yes" if report.info.chat_template else "none (ChatML)"),
    ]
    for key, value in rows:
        table.add_row(key, plain(value))
    table.add_row("sample", plain(report.sample.strip(), style="italic"))
    return table


def entry_table(entry: ModelEntry) -> Table:
    """What discovery knows about a model, before any probe. Names, paths and
    metadata come from files anyone may have written: literal text."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    origin = f"{entry.source} ({entry.origin})" if entry.origin else entry.source
    rows = [
        ("model", entry.name),
        ("file", str(entry.path)),
        ("source", origin),
        ("size", format_bytes(entry.size)),
        ("arch", entry.architecture or "-"),
        ("params", format_params(entry.parameter_count) if entry.parameter_count else "-"),
        ("quant", entry.quantization or "-"),
        ("trained ctx", str(entry.context_length or "-")),
    ]
    if entry.pull is not None:
        rows.append(("pulled", f"from Hugging Face on first use: {entry.pull}"))
    if entry.error:
        rows.append(("unusable", entry.error))
    for key, value in rows:
        table.add_row(key, plain(value))
    return table


class ModelTable(DataTable[Text]):
    """The models table: a row a model, Enter chats with the highlighted one."""


class ModelsPane(Vertical):
    """Models, their state, and what can be done with them."""

    BINDINGS = [
        Binding(
            "p",
            "probe",
            "Probe",
            tooltip="Probe the selected model: load it and time a short reply",
        ),
        Binding("l", "load", "Load", tooltip="Load the selected model"),
        Binding("u", "unload", "Unload", tooltip="Unload the selected model"),
        Binding("d", "set_default", "Default", tooltip="Make the selected model the default"),
        Binding("r", "refresh", "Refresh", tooltip="Look for models again"),
        Binding(
            "x,delete", "delete", "Delete", tooltip="Delete a model shimmy pulled (asks first)"
        ),
        Binding("slash", "focus_filter", "Filter", tooltip="Filter the models by name"),
    ]

    filter_text: reactive[str] = reactive("")

    @dataclass
    class EntriesLoaded(Message):
        entries: list[ModelEntry]
        default: str | None = None  # the model "default" means now

    @dataclass
    class ModelWorkDone(Message):
        name: str
        report: ProbeReport | None = None

    @dataclass
    class ChatRequested(Message):
        """Enter on a usable model: start a chat with it (the app opens the Chat tab)."""

        name: str

    @dataclass
    class ModelDeleted(Message):
        """A pulled model was deleted from disk (``freed`` bytes)."""

        name: str
        freed: int

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, manager: DashboardBackend, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager = manager
        self.entries: list[ModelEntry] = []
        self.busy: dict[str, str] = {}
        self.reports: dict[str, ProbeReport] = {}
        self._loaded: set[str] = set()
        self._default: str | None = None
        self._shown: tuple[list[str], int | None] = ([], None)  # columns, name width

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="Filter models: press /, type, Enter (Esc clears)",
            id="model-filter",
            compact=True,
            select_on_focus=False,
        )
        with Horizontal(id="models-body"):
            table = ModelTable(id="models-table", cursor_type="row", zebra_stripes=True)
            table.border_title = "Models"
            yield table
            with VerticalScroll(id="model-details") as details:
                details.border_title = "Details"
                yield Static("Discovering models…", id="model-info")
                yield Static("", id="model-probe")

    def on_mount(self) -> None:
        # After the first frame, so discovery's imports never delay the first paint.
        self.call_after_refresh(self.discover, False)

    def focus_default(self) -> None:
        self.query_one(ModelTable).focus()

    # -- discovery -------------------------------------------------------------

    @work(thread=True, exclusive=True, group="discovery", exit_on_error=False)
    def discover(self, refresh: bool = True) -> None:
        """Run discovery (again, when ``refresh``) and list what it found."""
        registry = self.manager.registry
        entries = registry.refresh() if refresh else registry.entries()
        self._default = self.manager.default_model_name
        self._loaded = set(self.manager.loaded_names())
        self.post_message(self.EntriesLoaded(entries, self._default))

    @on(EntriesLoaded)
    def _show_entries(self, message: EntriesLoaded) -> None:
        self.entries = message.entries
        self.rebuild()
        if not self.entries:
            from shimmy.models.first_model import how_to_get_a_model

            self.query_one("#model-info", Static).update(
                f"No models found.\n\n{how_to_get_a_model(in_dashboard=True)} "
                "(or SHIMMY_MODEL_PATHS).\n\n`shimmy diag` shows where shimmy looked."
            )

    def visible_entries(self) -> list[ModelEntry]:
        text = self.filter_text.strip().lower()
        if not text:
            return list(self.entries)
        return [
            e
            for e in self.entries
            if text in e.name.lower()
            or text in e.source.lower()
            or text in (e.architecture or "").lower()
            or text in (e.quantization or "").lower()
        ]

    def rebuild(self) -> None:
        """Fill the table from ``entries`` and the filter, with the columns its
        width holds, keeping the selected row."""
        table = self.query_one(ModelTable)
        selected = self.selected_name()
        rows = [(entry.name, self._cells(entry)) for entry in self.visible_entries()]
        self._shown = self._fit([cells for _, cells in rows])
        columns, name_width = self._shown
        table.clear(columns=True)
        for key in columns:
            table.add_column(COLUMNS[key], key=key, width=name_width if key == "name" else None)
        for name, cells in rows:
            table.add_row(*(cells[key] for key in columns), key=name)
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected), animate=False)
        self._show_details()

    def _fit(self, rows: list[dict[str, Text]]) -> tuple[list[str], int | None]:
        table = self.query_one(ModelTable)
        # The room the rows have: the table less its border and scrollbar.
        return fit_columns(content_widths(rows), table.scrollable_content_region.width)

    def _cells(self, entry: ModelEntry) -> dict[str, Text]:
        return model_cells(
            entry,
            loaded=entry.name in self._loaded,
            default=entry.name == self._default,
            busy=self.busy.get(entry.name),
        )

    def _update_row(self, name: str) -> None:
        """Show a model's new state: in place when the columns still fit (each
        column sizes to its new content), else the table is laid out again."""
        table = self.query_one(ModelTable)
        entry = self._entry(name)
        if entry is None or name not in table.rows:
            return
        visible = [self._cells(e) for e in self.visible_entries()]
        if self._fit(visible) != self._shown:
            self.rebuild()
            return
        cells = self._cells(entry)
        for key in self._shown[0]:
            table.update_cell(name, key, cells[key], update_width=True)

    def on_resize(self) -> None:
        # The table's new width is known once this layout is done.
        self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        visible = [self._cells(e) for e in self.visible_entries()]
        if self.entries and self._fit(visible) != self._shown:
            self.rebuild()

    def _entry(self, name: str | None) -> ModelEntry | None:
        return next((e for e in self.entries if e.name == name), None)

    def selected_name(self) -> str | None:
        table = self.query_one(ModelTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # the cursor sits outside a table that just shrank
            return None
        return None if key.value is None else str(key.value)

    def loaded_changed(self, loaded: set[str], default: str | None) -> None:
        """Called with each stats refresh: models load and unload on their own too."""
        if loaded == self._loaded and default == self._default:
            return
        changed = (loaded ^ self._loaded) | {n for n in (default, self._default) if n}
        self._loaded, self._default = set(loaded), default
        for name in changed:
            self._update_row(name)

    # -- details panel ---------------------------------------------------------

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self) -> None:
        self._show_details()

    def _show_details(self) -> None:
        entry = self._entry(self.selected_name())
        info = self.query_one("#model-info", Static)
        probe = self.query_one("#model-probe", Static)
        if entry is None:
            info.update("No model matches the filter." if self.entries else "")
            probe.update("")
            return
        info.update(entry_table(entry))
        report = self.reports.get(entry.name)
        if report is not None:
            table = probe_table(report)
            table.title = "Probe"
            table.title_style = "bold"
            probe.update(table)
        elif self.busy.get(entry.name) == "probing":
            probe.update(Text("\nProbing: loading and test-generating…", style="italic"))
        else:
            probe.update(Text("\nPress p to probe: load it and time a short reply.", style="dim"))

    # -- filter ----------------------------------------------------------------

    @on(Input.Changed, "#model-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value

    def watch_filter_text(self) -> None:
        if self.is_mounted:
            self.rebuild()

    @on(Input.Submitted, "#model-filter")
    def _filter_submitted(self) -> None:
        self.query_one(ModelTable).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#model-filter", Input).focus()

    def on_key(self, event: Key) -> None:
        field = self.query_one("#model-filter", Input)
        if field.has_focus and event.key in ("down", "escape"):
            if event.key == "escape":
                field.value = ""
            event.stop()
            self.query_one(ModelTable).focus()

    # -- actions on the selected model -------------------------------------------

    def _target(self, usable: bool = True) -> str | None:
        name = self.selected_name()
        entry = self._entry(name)
        if entry is None:
            self.notify("No model selected", severity="warning")
            return None
        if usable and not entry.offered:
            self.notify(f"{entry.name} is unusable: {entry.error}", severity="error")
            return None
        if name in self.busy:
            self.notify(f"{name} is busy {self.busy[name]}", severity="warning")
            return None
        return name

    def _start(
        self, name: str, doing: str, job: Callable[[], ProbeReport | None], description: str
    ) -> None:
        self.busy[name] = doing
        self._update_row(name)
        self._show_details()

        def run() -> None:
            report: ProbeReport | None = None
            try:
                report = job()
            finally:
                self.post_message(self.ModelWorkDone(name, report))

        self.run_worker(
            run, thread=True, group="models", exit_on_error=False, description=description
        )

    def action_probe(self) -> None:
        name = self.target_for("probe")
        if name is None:
            return
        from shimmy.models.manager import ModelManager
        from shimmy.models.probe import probe_model

        manager = self.manager
        if not isinstance(manager, ModelManager):
            # A probe times a real load and reply, which only shimmy's own manager
            # gives (probe_model takes a ModelManager); the dashboard always has one.
            self.notify("Probing needs shimmy's model manager", severity="error")
            return
        self._start(name, "probing", lambda: probe_model(manager, name), f"probe {name}")

    def action_load(self) -> None:
        name = self.target_for("load")
        if name is not None:

            def load() -> None:
                self.manager.load(name)

            self._start(name, "loading", load, f"load {name}")

    def action_unload(self) -> None:
        name = self.target_for("unload")
        if name is None:
            return
        if not self.manager.is_loaded(name):
            self.notify(f"{name} is not loaded")
            return

        def unload() -> None:
            self.manager.unload(name)

        self._start(name, "unloading", unload, f"unload {name}")

    def action_set_default(self) -> None:
        name = self.target_for("default")
        if name is None:
            return
        try:
            self.manager.set_default(name)
        except ShimmyError as exc:
            self.notify(exc.one_line(), severity="error")
            return
        self.loaded_changed(self._loaded, name)
        self.post_message(ModelsChanged())
        self.notify(f"{name} is now the default model (remembered for the next start)")

    def action_refresh(self) -> None:
        self.query_one("#model-info", Static).update("Discovering models…")
        self.discover(refresh=True)

    def target_for(self, action: str) -> str | None:
        return self._target(usable=action not in ("unload", "delete"))

    @on(DataTable.RowSelected, "#models-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter: chat with the model (an unusable one says why it cannot)."""
        entry = self._entry(str(event.row_key.value))
        if entry is None:
            return
        if not entry.offered:
            self.notify(f"{entry.name} is unusable: {entry.error}", severity="error")
            return
        self.post_message(self.ChatRequested(entry.name))

    def action_delete(self) -> None:
        """Delete the highlighted model's files, asking first: only a model shimmy
        pulled, as ``shimmy rm`` (anything else is another tool's or the user's)."""
        from shimmy.models import hub

        name = self.target_for("delete")
        entry = self._entry(name)
        if name is None or entry is None:
            return
        record = next((r for r in map(hub.find_pulled, entry.parts) if r is not None), None)
        if record is None:
            self.notify(
                f"{name} was not downloaded by shimmy, so shimmy will not delete it "
                f"({entry.path}, {entry.source})",
                severity="warning",
            )
            return
        question = (
            f"Delete {name} ({format_bytes(entry.size)}, pulled from {record['repo_id']})? "
            "Its files are removed from disk; the Hub tab can download it again."
        )

        def delete() -> None:
            if self.manager.is_loaded(name):
                self.manager.unload(name)
            freed = hub.remove_pulled(record)
            entries = self.manager.registry.refresh()
            self.post_message(self.ModelDeleted(name, freed))
            self.post_message(self.EntriesLoaded(entries, self.manager.default_model_name))

        def answered(yes: bool | None) -> None:
            if yes and name not in self.busy:
                self._start(name, "deleting", delete, f"delete {name}")

        self.app.push_screen(ConfirmScreen(question), answered)

    @on(ModelDeleted)
    def _deleted(self, message: ModelDeleted) -> None:
        self.notify(f"Deleted {message.name} ({format_bytes(message.freed)} freed)")

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        notify_if_failed(self, event)

    @on(ModelWorkDone)
    def _work_done(self, message: ModelWorkDone) -> None:
        doing = self.busy.pop(message.name, None)
        if message.report is not None:
            self.reports[message.name] = message.report
        self._loaded = set(self.manager.loaded_names())
        entry = self._entry(message.name)
        if entry is not None and entry.pull is not None:
            self.discover(refresh=False)  # its first load pulled it: list the file it now is
        self._update_row(message.name)
        self._show_details()
        if doing == "probing" and message.report is not None:
            speed = message.report.tokens_per_second
            self.notify(
                f"{message.name}: {speed:.0f} tok/s" if speed else f"{message.name} probed",
                title="Probe",
            )
        elif doing == "loading" and message.name in self._loaded:
            self.notify(f"{message.name} loaded")
        elif doing == "unloading" and message.name not in self._loaded:
            self.notify(f"{message.name} unloaded")
