"""The Log tab: what shimmy, uvicorn and llama.cpp logged while the dashboard ran."""

from __future__ import annotations

import logging

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import RichLog

LEVEL_STYLES = {
    logging.DEBUG: "dim",
    logging.INFO: "",
    logging.WARNING: "yellow",
    logging.ERROR: "bold red",
    logging.CRITICAL: "bold white on red",
}


class LogPane(Vertical):
    """Log records, newest at the bottom."""

    BINDINGS = [Binding("c", "clear", "Clear", tooltip="Clear the log")]

    def compose(self) -> ComposeResult:
        log = RichLog(id="log-view", wrap=True, markup=False, max_lines=2000)
        log.border_title = "Log"
        yield log

    def focus_default(self) -> None:
        self.query_one(RichLog).focus()

    def show_backlog(self, records: list[tuple[int, str]]) -> None:
        for level, text in records:
            self.add(level, text)

    def add(self, level: int, text: str) -> None:
        style = LEVEL_STYLES.get(level, "")
        self.query_one(RichLog).write(Text(text, style=style))

    def action_clear(self) -> None:
        self.query_one(RichLog).clear()
