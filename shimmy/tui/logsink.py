"""Logging while the dashboard runs: records go to the log pane, never the screen.

Textual's own ``TextualHandler`` prints to stderr when called outside the app's
context, which is where uvicorn's and the engine's threads log from; so this
handler keeps the last records in memory and posts each to the app
(``post_message`` is thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from textual.app import App

from shimmy.tui.messages import LogRecordPosted

# Libraries that log each HTTP request or lock at INFO (huggingface_hub's client,
# httpx2, logs "HTTP Request: GET ..." for every hub call): below WARNING they are
# chatter, not news, in the Log tab. By the first part of the logger's name.
CHATTY_LIBRARIES = frozenset(
    {"httpx", "httpx2", "httpcore", "huggingface_hub", "hf_xet", "filelock", "urllib3", "asyncio"}
)


class QuietLibraries(logging.Filter):
    """Drops records below WARNING from :data:`CHATTY_LIBRARIES`. A filter on the
    handler rather than logger levels: a library that sets its own logger's level
    when imported (huggingface_hub does) cannot undo it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return record.name.partition(".")[0] not in CHATTY_LIBRARIES


class DashboardLogHandler(logging.Handler):
    """Keeps the last ``capacity`` records and forwards new ones to ``app``; with
    ``quiet_libraries`` (the default; ``-v`` turns it off) HTTP clients' chatter
    is left out."""

    def __init__(self, capacity: int = 1000, *, quiet_libraries: bool = True) -> None:
        super().__init__()
        if quiet_libraries:
            self.addFilter(QuietLibraries())
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
        self.records: deque[tuple[int, str]] = deque(maxlen=capacity)
        self._app: App[Any] | None = None  # any app, whatever it returns on exit
        self._records_lock = threading.Lock()

    def attach(self, app: App[Any] | None) -> None:
        self._app = app

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad format string must not break the caller
            self.handleError(record)
            return
        with self._records_lock:
            self.records.append((record.levelno, text))
        app = self._app
        if app is not None and app.is_running:
            app.post_message(LogRecordPosted(record.levelno, text))

    def backlog(self) -> list[tuple[int, str]]:
        with self._records_lock:
            return list(self.records)


def route_logging_to(handler: DashboardLogHandler, verbose: bool) -> list[logging.Handler]:
    """Make ``handler`` the root logger's only handler; returns the ones it replaced."""
    root = logging.getLogger()
    previous = list(root.handlers)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # spares making records the handler would drop
        for name in CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
    return previous
