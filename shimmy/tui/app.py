"""The shimmy dashboard: models, chat, the embedded server and its figures.

One :class:`ShimmyApp` holds the process's ``ModelManager`` (shared with the
embedded API server), seen through :class:`~shimmy.tui.backend.DashboardBackend`,
and a :class:`ServerControl`. Blocking work (discovery, loading, probing,
starting and stopping the server, taking stats) runs in thread workers that
report back with messages; one ``Worker.StateChanged`` handler turns failures
into notifications.

Nothing from outside is ever read as markup (request paths, model and file
names, errors...): widgets get it through :func:`shimmy.tui.plain.plain`, and
every notification is plain text (:meth:`ShimmyApp.notify`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Header, TabbedContent, TabPane
from textual.worker import Worker

from shimmy.api.server_control import ServerControl, describe
from shimmy.chats import ChatStore
from shimmy.errors import ShimmyError
from shimmy.tui.backend import DashboardBackend
from shimmy.tui.chat_pane import ChatPane
from shimmy.tui.commands import bound_commands, keyless_commands
from shimmy.tui.download_queue import DownloadQueue
from shimmy.tui.failures import notify_if_failed
from shimmy.tui.footer import DashboardFooter
from shimmy.tui.help_screen import HelpScreen
from shimmy.tui.hub_pane import HubPane
from shimmy.tui.keymap import Section, dashboard_keys, key_label, own_bindings
from shimmy.tui.log_pane import LogPane
from shimmy.tui.logsink import DashboardLogHandler
from shimmy.tui.messages import (
    LogRecordPosted,
    ModelsChanged,
    ServerStateChanged,
    StartServerRequested,
    StatsUpdated,
)
from shimmy.tui.models_pane import ModelsPane
from shimmy.tui.screen import DashboardScreen
from shimmy.tui.server_pane import ServerPane

DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"
# Each tab's pane (its id is "<tab>-pane"), in the order of the tabs.
TAB_PANES: dict[str, type[ModelsPane | ChatPane | ServerPane | LogPane | HubPane]] = {
    "models": ModelsPane,
    "chat": ChatPane,
    "server": ServerPane,
    "log": LogPane,
    "hub": HubPane,
}
TABS = tuple(TAB_PANES)
# What the dashboard itself did (the server started, a download ended), for the Log tab.
log = logging.getLogger("shimmy.dashboard")
THEME_PREFERENCE = "theme"


def log_server_state(message: ServerStateChanged) -> None:
    """Say in the log what a listener did: started, stopped, or why it did not start."""
    name = "Ollama's API" if message.listener == "ollama" else "API server"
    if message.running:
        log.info("%s listening on %s", name, message.url)
    elif message.error:
        log.error("%s not started: %s", name, message.error)
    else:
        log.info("%s off", name)


class ShimmyApp(App[int]):
    """The dashboard. ``serve`` false (``--no-server``) leaves the server stopped.

    ``chats`` keeps the conversations and what the user chose (theme, chat
    settings); without one they live in memory for this run. ``chats_problem``
    says what happened to a database that could not be used (shimmy.chats.opening).
    """

    TITLE = "shimmy"
    CSS_PATH = "app.tcss"
    # Screen classes app.tcss lays narrow and short terminals out by (80x24 must work).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            priority=True,
            tooltip="Quit (stops the server and any reply)",
        ),
        Binding("f1", "help", "Help", tooltip="Help: every key, at the tab in use"),
        Binding("f2", "show_tab('models')", "Models", tooltip="Go to the Models tab"),
        Binding("f3", "show_tab('chat')", "Chat", tooltip="Go to the Chat tab"),
        Binding("f4", "show_tab('server')", "Server", tooltip="Go to the Server tab"),
        Binding("f5", "show_tab('log')", "Log", tooltip="Go to the Log tab"),
        Binding("f6", "show_tab('hub')", "Hub", tooltip="Go to the Hub tab"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False, tooltip="Dark / light theme"),
    ]

    def __init__(
        self,
        manager: DashboardBackend,
        server: ServerControl,
        *,
        serve: bool = True,
        log_handler: DashboardLogHandler | None = None,
        stats_interval: float = 1.0,
        initial_tab: str = "models",
        chats: ChatStore | None = None,
        chats_problem: str | None = None,
    ) -> None:
        super().__init__()
        self.manager = manager
        self.server = server
        self.serve = serve
        self.log_handler = log_handler
        self.stats_interval = stats_interval
        self.initial_tab = initial_tab
        self.chats = chats if chats is not None else ChatStore(":memory:")
        self.chats_problem = chats_problem
        remembered = self.chats.preference(THEME_PREFERENCE)
        self.theme = remembered if remembered in (DARK_THEME, LIGHT_THEME) else DARK_THEME
        self.sub_title = "starting…" if serve else "server off"
        self._chat: ChatPane | None = None  # read by the stats worker thread
        self._stats_worker: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        with TabbedContent(initial=self.initial_tab, id="tabs"):
            with TabPane("Models", id="models"):
                yield ModelsPane(self.manager, id="models-pane")
            with TabPane("Chat", id="chat"):
                yield ChatPane(self.manager, self.chats, id="chat-pane")
            with TabPane("Server", id="server"):
                yield ServerPane(self.server, id="server-pane")
            with TabPane("Log", id="log"):
                yield LogPane(id="log-pane")
            with TabPane("Hub", id="hub"):
                yield HubPane(self.manager, id="hub-pane")
        yield DashboardFooter()

    def on_mount(self) -> None:
        self._chat = self.query_one(ChatPane)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        if self.chats_problem:
            self.notify(self.chats_problem, title="Chats", severity="error", timeout=30)
        self.call_after_refresh(self.action_show_tab, self.initial_tab)
        if self.log_handler is not None:
            self.log_handler.attach(self)
            self.query_one(LogPane).show_backlog(self.log_handler.backlog())
        # Background work starts after the first frame: its imports (uvicorn,
        # FastAPI, llama.cpp) hold the GIL and would delay the first paint.
        self.call_after_refresh(self._start_background_work)

    def _start_background_work(self) -> None:
        if self.serve:
            self.start_server()
        else:
            self.post_message(ServerStateChanged(False, None, None))
        if self.server.ollama is not None and self.server.ollama_on:
            self.start_ollama()
        if self.stats_interval > 0:
            self.set_interval(self.stats_interval, self.refresh_stats)
            self.refresh_stats()

    # -- the embedded server -----------------------------------------------------

    @work(thread=True, exclusive=True, group="server", exit_on_error=False)
    def start_server(self, bind: str | None = None) -> None:
        """Start the server, on ``bind`` (``HOST:PORT``) first when given; a refused
        address or a failed start is posted as the server's error."""
        try:
            if bind is not None:
                self.server.rebind(bind)
            url = self.server.start()
        except ShimmyError as exc:
            self.post_message(ServerStateChanged(False, None, describe(exc)))
            return
        self.post_message(ServerStateChanged(True, url, None))

    @on(StartServerRequested)
    def _start_requested(self, message: StartServerRequested) -> None:
        if not self.server.running:
            self.start_server(message.bind)

    @work(thread=True, exclusive=True, group="server", exit_on_error=False)
    def stop_server(self) -> None:
        self.server.stop()
        self.post_message(ServerStateChanged(False, None, None))

    @work(thread=True, exclusive=True, group="ollama", exit_on_error=False)
    def start_ollama(self) -> None:
        """Start Ollama's listener; a port in use is its error, shown on the Server
        tab, and the rest of the dashboard carries on."""
        ollama = self.server.ollama
        if ollama is None:
            return
        try:
            url = ollama.start()
        except ShimmyError as exc:
            self.post_message(ServerStateChanged(False, None, describe(exc), "ollama"))
            return
        self.post_message(ServerStateChanged(True, url, None, "ollama"))

    @work(thread=True, exclusive=True, group="ollama", exit_on_error=False)
    def stop_ollama(self) -> None:
        if self.server.ollama is not None:
            self.server.ollama.stop()
        self.post_message(ServerStateChanged(False, None, None, "ollama"))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool:
        # The Server tab's "o" only where there is an Ollama listener to switch.
        if action == "toggle_ollama" and self.server.ollama is None:
            return False  # hidden
        return True

    def action_toggle_ollama(self) -> None:
        ollama = self.server.ollama
        if ollama is None:
            self.notify("Ollama's API is not available here")
        elif ollama.running:
            self.stop_ollama()
        else:
            self.start_ollama()

    @on(ServerStateChanged)
    def _server_state(self, message: ServerStateChanged) -> None:
        log_server_state(message)
        if message.listener == "ollama":
            if message.error:
                error = f"Ollama's API is not served: {message.error}"
                self.notify(error, title="Ollama", severity="warning", timeout=10)
            for pane in self.query(ServerPane):
                pane.server_changed(message)
            return
        if message.running:
            self.sub_title = message.url or ""
        elif message.error:
            self.sub_title = "server not running"
            self.notify(
                f"{message.error}. Pick another address on the Server tab (F4).",
                title="Server",
                severity="error",
                timeout=10,
            )
        else:
            self.sub_title = "server off"
        for pane in self.query(ServerPane):  # none while the app shuts down
            pane.server_changed(message)

    def action_toggle_server(self) -> None:
        if self.server.running:
            self.stop_server()
        else:
            self.start_server()

    # -- live figures ------------------------------------------------------------

    def refresh_stats(self) -> None:
        """Take fresh figures in a thread, unless the last taking is still running
        (the manager is busy loading, say): cancelling it would not stop its thread,
        and threads would pile up one per tick."""
        if self._stats_worker is not None and not self._stats_worker.is_finished:
            return
        self._stats_worker = self.take_stats()

    @work(thread=True, group="stats", exit_on_error=False)
    def take_stats(self) -> None:
        stats = self.manager.stats()
        # Totals count a generation when it ends; add the tokens of those still running
        # so that "tokens/s now" moves while a long reply streams.
        live = sum(
            r.generation.completion_tokens
            for r in self.server.request_log.records()
            if r.generation is not None and not r.generation.done
        )
        live += self._chat.live_tokens() if self._chat is not None else 0
        self.post_message(StatsUpdated(stats, live))

    @on(StatsUpdated)
    def _stats(self, message: StatsUpdated) -> None:
        stats = message.stats
        try:
            server_pane, models_pane = self.query_one(ServerPane), self.query_one(ModelsPane)
            server_pane.stats_changed(stats, message.live_completion_tokens)
            models_pane.loaded_changed({m.name for m in stats.loaded}, stats.default_model)
            self.query_one(ChatPane).default_changed(stats.default_model)
        except NoMatches:  # a worker's last report, arriving while the app shuts down
            return

    @on(ModelsPane.EntriesLoaded)
    def _entries_loaded(self, message: ModelsPane.EntriesLoaded) -> None:
        for pane in self.query(ChatPane):
            pane.set_models([e.name for e in message.entries if e.offered], message.default)

    @on(ModelsPane.ChatRequested)
    def _chat_requested(self, message: ModelsPane.ChatRequested) -> None:
        self.action_show_tab("chat")
        self.query_one(ChatPane).chat_with(message.name)

    @on(ModelsChanged)
    def _models_changed(self) -> None:
        for pane in self.query(ChatPane):
            pane.default_changed(self.manager.default_model_name)

    @on(DownloadQueue.Finished)
    def _download_finished(self, message: DownloadQueue.Finished) -> None:
        self._log_download(message)
        # The download worker ran discovery again: list what it found (Models and Chat).
        if message.state == "done":
            for pane in self.query(ModelsPane):
                pane.discover(refresh=False)

    def _log_download(self, message: DownloadQueue.Finished) -> None:
        jobs = [job for pane in self.query(HubPane) for job in pane.downloads.jobs]
        what = next((job.label for job in jobs if job.id == message.job_id), "a file")
        if message.state == "done":
            log.info("downloaded %s: %s", what, message.model_name)
        elif message.state == "failed":
            log.error("download of %s failed: %s", what, message.error)
        else:
            log.info("download of %s cancelled", what)

    @on(LogRecordPosted)
    def _log_record(self, message: LogRecordPosted) -> None:
        for pane in self.query(LogPane):
            pane.add(message.level, message.text)

    # -- failures ----------------------------------------------------------------

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        notify_if_failed(self, event)

    # -- navigation, help, themes ---------------------------------------------------

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.query_one(f"#{tab}-pane", TAB_PANES[tab]).focus_default()

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        tab = event.pane.id or ""
        if tab in TABS:
            self.refresh_bindings()

    def key_sections(self) -> list[Section]:
        """Every key, from the bindings: the help screen's and the palette's source."""
        tab_keys = {
            binding.action: key_label(binding.key)
            for binding in own_bindings(self)
            if binding.action.startswith("show_tab(")
        }
        tabs = []
        for tab, pane_type in TAB_PANES.items():
            title = tab.title()
            key = tab_keys.get(f"show_tab('{tab}')")
            tabs.append(
                (
                    tab,
                    f"{title} ({key})" if key else title,
                    self.query_one(f"#{tab}-pane", pane_type),
                )
            )
        return dashboard_keys(self, tabs)

    def action_help(self) -> None:
        """Show every key, scrolled to the tab in use."""
        if not isinstance(self.screen, HelpScreen):
            tab = self.query_one(TabbedContent).active
            self.push_screen(HelpScreen(self.key_sections(), tab if tab in TABS else None))

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.theme == DARK_THEME else DARK_THEME

    def _theme_changed(self, theme: object) -> None:
        self.remember_theme(self.theme)

    @work(thread=True, group="preferences", exit_on_error=False, description="remember theme")
    def remember_theme(self, theme: str) -> None:
        self.chats.set_preference(THEME_PREFERENCE, theme)

    def get_default_screen(self) -> Screen[Any]:
        return DashboardScreen(id="_default")

    # Screen[Any]: Textual's own signature (any screen, whatever it returns).
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        # Textual's Quit would sit beside ours (the same action) under another name.
        yield from (c for c in super().get_system_commands(screen) if c.title != "Quit")
        yield from bound_commands(self, self.key_sections())
        yield from keyless_commands(self, self.query_one(ChatPane))

    # -- notifications -----------------------------------------------------------

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Show a notification, always as plain text (``markup`` is ignored): they quote
        model and file names, hub names and errors from outside, where ``[/]`` would
        end the app and ``[@click=...]`` run an action. Widgets' ``notify`` comes here."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    # -- quitting ----------------------------------------------------------------

    async def action_quit(self) -> None:
        """Stop replies (keeping what they wrote) and the server (freeing the port),
        then exit 0."""
        chat = self.query_one(ChatPane)
        if chat.replying:
            chat.action_stop()
            await chat.wait_for_reply(5)
        await chat.save_pending_settings()
        await asyncio.to_thread(self.server.stop)
        if self.server.ollama is not None:
            await asyncio.to_thread(self.server.ollama.stop)
        self.exit(0)

    def on_unmount(self) -> None:
        if self.log_handler is not None:
            self.log_handler.attach(None)
