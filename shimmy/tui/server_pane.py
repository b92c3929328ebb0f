"""The Server tab: the embedded server's state, live figures and the API request log."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Sparkline, Static, Switch

from shimmy.api.requestlog import WEBSOCKET_OPEN
from shimmy.api.server_control import ServerControl
from shimmy.tui.messages import ServerStateChanged, StartServerRequested
from shimmy.tui.plain import plain
from shimmy.tui.tables import Row, sync_rows
from shimmy.units import format_bytes

if TYPE_CHECKING:
    from shimmy.api.requestlog import RequestRecord
    from shimmy.models.manager import LoadedModel, ManagerStats

HISTORY_SECONDS = 300  # the sparkline shows the last five minutes
LOG_ROWS = 200  # newest request-log lines shown
LOADED_COLUMNS = (
    "Model",
    "Memory",
    "Context",
    "Load",
    "State",
    "Saved prompts",
    "Drafts",
    "Idle",
)
REQUEST_COLUMNS = (
    "Time",
    "Client",
    "Endpoint",
    "Model",
    "Prompt",
    "Compl",
    "TTFT",
    "Tok/s",
    "Status",
)


def format_elapsed(seconds: float) -> str:
    """How long something has run or sat idle (an uptime, an idle time): "42s",
    "3m 07s", "2h 05m". A download's time left is ``shimmy.units.format_time_left``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _number(value: float | int | None, fmt: str = "{:d}") -> Text:
    return Text("-" if value is None else fmt.format(value), justify="right")


def request_row(record: RequestRecord) -> tuple[Text | str, ...]:
    """One request-log line; a request still running shows its live counts. The
    client, path and model come from whoever sent the request: literal text."""
    if not record.done:
        status = Text("…", style="yellow")
    elif record.status == WEBSOCKET_OPEN:
        status = Text("ws", style="green")
    elif record.status is not None and record.status >= 400:
        status = Text(str(record.status), style="bold red")
    else:
        status = Text(str(record.status), style="green")
    ttft = record.time_to_first_token
    return (
        time.strftime("%H:%M:%S", time.localtime(record.started_at)),
        plain(record.client),
        plain(record.endpoint),
        plain(record.model or "-"),
        _number(record.prompt_tokens),
        _number(record.completion_tokens),
        _number(None if ttft is None else ttft * 1000, "{:.0f} ms"),
        _number(record.tokens_per_second, "{:.1f}"),
        status,
    )


def idle_cell(model: LoadedModel) -> str:
    """How long a model has been idle and, with a keep-alive, when it unloads."""
    from shimmy.units import format_time_left

    idle = format_elapsed(model.idle_seconds)
    if model.unloads_in is None or model.busy:
        return idle
    return f"{idle}, unloads in {format_time_left(model.unloads_in)}"


class ServerPane(VerticalScroll):
    """Server state and controls, live figures, loaded models, API requests."""

    BINDINGS = [
        Binding("s", "app.toggle_server", "Start/stop", tooltip="Start / stop the API server"),
        Binding("b", "edit_bind", "Address", tooltip="Edit the server's address (HOST:PORT)"),
        Binding(
            "o",
            "app.toggle_ollama",
            "Ollama API",
            tooltip="Switch Ollama's API (the second listener, --ollama) on / off",
        ),
    ]

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, server: ServerControl, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.history: deque[float] = deque([0.0] * 60, maxlen=HISTORY_SECONDS)
        self._last_tokens: int | None = None
        self._last_sample: float | None = None
        self._log_version = -1
        self._default_model: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="server-top"):
            with Vertical(id="server-status") as status:
                status.border_title = "Server"
                yield Static("starting…", id="server-state")
                with Horizontal(id="server-controls"):
                    yield Input(self.server.bind, id="bind-input", compact=True)
                    yield Button("Start", id="server-start", variant="success", compact=True)
                    yield Button("Stop", id="server-stop", variant="error", compact=True)
                if self.server.ollama is not None:
                    with Horizontal(id="ollama-row"):
                        yield Switch(self.server.ollama.running, id="ollama-switch")
                        yield Static("", id="ollama-state")
            with Vertical(id="server-figures") as figures:
                figures.border_title = "Live"
                yield Static("", id="figures")
                yield Sparkline(list(self.history), id="tokens-sparkline")
        loaded = DataTable[RenderableType](
            id="loaded-models", cursor_type="none", show_cursor=False
        )
        loaded.border_title = "Loaded models"
        yield loaded
        requests = DataTable[RenderableType](
            id="request-log", cursor_type="row", zebra_stripes=True
        )
        requests.border_title = "API requests"
        yield requests

    def on_mount(self) -> None:
        loaded = self.query_one("#loaded-models", DataTable)
        for column in LOADED_COLUMNS:
            loaded.add_column(column, key=column.lower())
        log = self.query_one("#request-log", DataTable)
        for column in REQUEST_COLUMNS:
            log.add_column(column, key=column.lower())
        self._show_requests()

    def focus_default(self) -> None:
        # Focus without scrolling to it: on a short terminal the requests table
        # sits below the fold, and the state and controls at the top matter more
        # (an animated scroll also left the tab at a different place each time).
        self.query_one("#request-log", DataTable).focus(scroll_visible=False)
        self.scroll_home(animate=False)

    # -- server state ------------------------------------------------------------

    def server_changed(self, message: ServerStateChanged) -> None:
        if message.listener == "ollama":
            self._show_ollama(message.error)
        else:
            self._show_state(message.error)

    def _show_ollama(self, error: str | None = None) -> None:
        """Ollama's listener: its URL, or its address while off, or why it is not
        served (a port in use: a real Ollama, say); the switch follows it."""
        ollama = self.server.ollama
        if ollama is None:
            return
        text = Text.assemble(("Ollama API ", "bold"))
        if ollama.running:
            text.append(ollama.url or "", style="underline")
        elif error:
            text.append_text(plain(f"not served: {error}", style="red"))
        else:
            text.append_text(plain(f"off ({ollama.bind})", style="dim"))
        self.query_one("#ollama-state", Static).update(text)
        switch = self.query_one("#ollama-switch", Switch)
        with switch.prevent(Switch.Changed):
            switch.value = ollama.running

    @on(Switch.Changed, "#ollama-switch")
    def _ollama_switched(self, event: Switch.Changed) -> None:
        ollama = self.server.ollama
        if ollama is not None and event.value != ollama.running:
            self.app.call_later(self.app.run_action, "toggle_ollama")

    def _show_state(self, error: str | None = None) -> None:
        server = self.server
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold")
        table.add_column()
        if server.running:
            table.add_row("state", Text("● running", style="bold green"))
            table.add_row("url", Text(server.url or "", style="underline"))
            # This listener's time up; the Live box has the process's.
            uptime = server.uptime_seconds
            table.add_row("serving for", format_elapsed(uptime) if uptime is not None else "-")
        elif error:
            table.add_row("state", Text("● not running", style="bold red"))
            table.add_row("why", plain(error, style="red"))
            table.add_row("", "Edit the address below and press Start.")
        else:
            table.add_row("state", Text("○ stopped", style="dim"))
            table.add_row("address", plain(server.bind))
        if server.manager.settings.api_keys:
            table.add_row("auth", Text("API key required", style="green"))
        else:
            table.add_row("auth", Text("none (anyone who can reach the address)", style="yellow"))
        if self._default_model:
            table.add_row("default", plain(self._default_model, overflow="ellipsis", no_wrap=True))
        self.query_one("#server-state", Static).update(table)
        self.query_one("#server-start", Button).disabled = server.running
        self.query_one("#server-stop", Button).disabled = not server.running
        self.query_one("#bind-input", Input).disabled = server.running

    @on(Button.Pressed, "#server-start")
    @on(Input.Submitted, "#bind-input")
    def _start_pressed(self) -> None:
        # The app rebinds and starts in a thread: checking the address may resolve a
        # host name. A refused address (a bad one, or one beyond this machine with no
        # API key) comes back as ServerStateChanged and shows here as "why".
        wanted = self.query_one("#bind-input", Input).value.strip()
        self.post_message(
            StartServerRequested(wanted if wanted and wanted != self.server.bind else None)
        )

    @on(Button.Pressed, "#server-stop")
    def _stop_pressed(self) -> None:
        self.app.call_later(self.app.run_action, "toggle_server")

    def action_edit_bind(self) -> None:
        field = self.query_one("#bind-input", Input)
        if field.disabled:
            self.notify("Stop the server to change its address")
            return
        field.focus()

    # -- live figures ------------------------------------------------------------

    def stats_changed(self, stats: ManagerStats, live_tokens: int = 0) -> None:
        now = time.monotonic()
        produced = stats.totals.completion_tokens + live_tokens
        rate = 0.0
        if self._last_tokens is not None and self._last_sample is not None:
            elapsed = now - self._last_sample
            if elapsed > 0:
                rate = max(0.0, (produced - self._last_tokens) / elapsed)
        self._last_tokens, self._last_sample = produced, now
        self.history.append(rate)
        self._default_model = stats.default_model
        self.query_one(Sparkline).data = list(self.history)
        self.query_one("#figures", Static).update(figures_table(stats, rate))
        self._show_loaded(stats)
        self._show_state(self.server.error if not self.server.running else None)
        ollama = self.server.ollama
        if ollama is not None:
            self._show_ollama(ollama.error if not ollama.running else None)
        self._show_requests()

    def _show_loaded(self, stats: ManagerStats) -> None:
        rows: list[Row] = []
        for model in stats.loaded:
            state = "busy" if model.busy else "idle"
            if model.slots > 1:
                state = f"{model.slots_busy}/{model.slots} slots busy"
            if model.queued:
                state += f", {model.queued} queued"
            cells = (
                model.name,
                Text(format_bytes(model.memory_bytes), justify="right"),
                Text(str(model.n_ctx), justify="right"),
                Text(f"{model.load_seconds:.2f} s", justify="right"),
                state,
                saved_prompts(model),
                drafts(model),
                idle_cell(model),
            )
            rows.append((model.name, cells))
        if not stats.loaded:
            none = Text("none loaded: they load on first use", style="dim")
            rows.append(("", (none, *[""] * (len(LOADED_COLUMNS) - 1))))
        sync_rows(self.query_one("#loaded-models", DataTable), rows)

    def _show_requests(self) -> None:
        request_log = self.server.request_log
        records = request_log.records()
        live = any(not r.done or (r.generation and not r.generation.done) for r in records)
        if request_log.version == self._log_version and not live:
            return
        self._log_version = request_log.version
        table = self.query_one("#request-log", DataTable)
        newest = reversed(records[-LOG_ROWS:])
        sync_rows(table, [(str(record.id), request_row(record)) for record in newest])
        table.border_subtitle = f"{len(records)} API requests (chat replies are not listed)"


def saved_prompts(model: LoadedModel) -> Text:
    """The conversations a model keeps in host memory (--cache-ram): how many, their
    size, and how many prompts came back from them instead of being decoded again."""
    if not model.saved_prompts and not model.saved_prompt_hits:
        return Text("none", style="dim")
    size = format_bytes(model.saved_prompt_bytes)
    return Text(f"{model.saved_prompts} in {size}, {model.saved_prompt_hits} reused")


def drafts(model: LoadedModel) -> Text:
    """Speculative decoding (--spec): the share of drafted tokens the model
    accepted, of how many drafted."""
    if model.acceptance is None:
        return Text("none", style="dim")
    return Text(f"{model.acceptance:.0%} of {model.drafted_tokens:,}")


def figures_table(stats: ManagerStats, rate: float) -> Table:
    """Process memory, speed now, queue and totals."""
    totals = stats.totals
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="bold")
    table.add_column()
    models_memory = sum(m.memory_bytes for m in stats.loaded)
    average = totals.average_tokens_per_second
    table.add_row(
        "memory",
        format_bytes(stats.rss_bytes),
        "models",
        f"{len(stats.loaded)} · {format_bytes(models_memory)}",
    )
    table.add_row("tok/s now", f"{rate:.1f}", "average", f"{average:.1f}" if average else "-")
    table.add_row("active", str(stats.active), "queued", str(stats.queued))
    # Every reply the models wrote, the Chat tab's included (the API requests table
    # below lists HTTP requests only); shimmy's time up, not the server's.
    table.add_row(
        "replies",
        f"{totals.requests} (API + chat)" + (f" · {totals.failed} failed" if totals.failed else ""),
        "shimmy up",
        format_elapsed(stats.uptime_seconds),
    )
    table.add_row("tokens in", str(totals.prompt_tokens), "out", str(totals.completion_tokens))
    return table
