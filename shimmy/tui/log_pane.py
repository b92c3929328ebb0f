"""The Log tab: what shimmy, uvicorn and llama.cpp logged while the dashboard ran,
filtered by level and by text.

The pane keeps the records and draws them itself: a RichLog wraps a line once,
at the width it has when the line is written, so lines written while the tab was
hidden wrapped at a guess and a resize cut them. Here lines are drawn only while
the tab shows, and drawn again at the new width when it changes or a filter does.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, RichLog, Select

KEPT_LINES = 2000
LEVEL_STYLES = {
    logging.DEBUG: "dim",
    logging.INFO: "",
    logging.WARNING: "yellow",
    logging.ERROR: "bold red",
    logging.CRITICAL: "bold white on red",
}
LEVELS = [
    ("every level", logging.NOTSET),
    ("info and above", logging.INFO),
    ("warnings, errors", logging.WARNING),
    ("errors only", logging.ERROR),
]


def line(level: int, text: str) -> Text:
    """A record as the log shows it: literal text, coloured by its level."""
    return Text(text, style=LEVEL_STYLES.get(level, ""))


class LogView(RichLog):
    """The lines, drawn by :class:`LogPane`; it says when its width changes."""

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, pane: LogPane, **kwargs: Any) -> None:
        # min_width 1: RichLog's own 78 wraps every line at 78 columns or more,
        # wider than a narrow terminal's log.
        super().__init__(wrap=True, markup=False, max_lines=KEPT_LINES, min_width=1, **kwargs)
        self.pane = pane
        self.drawn_width = 0  # the width the lines on screen were wrapped at
        self.showing = False

    def on_show(self) -> None:
        self.showing = True
        self.pane.redraw_if_stale()

    def on_hide(self) -> None:
        self.showing = False

    def on_resize(self, event: events.Resize) -> None:
        super().on_resize(event)
        if self.showing:
            self.pane.redraw_if_stale()


class LogPane(Vertical):
    """Log records, newest at the bottom, with a level and a text filter."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "clear", "Clear", tooltip="Clear the log"),
        Binding("slash", "focus_filter", "Filter", tooltip="Filter the log by text"),
    ]

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.records: deque[tuple[int, str]] = deque(maxlen=KEPT_LINES)
        self.min_level = logging.NOTSET
        self.text_filter = ""
        self._stale = True  # records or filters changed while the lines were not drawn

    def compose(self) -> ComposeResult:
        with Horizontal(id="log-filters"):
            yield Select(
                LEVELS, value=logging.NOTSET, allow_blank=False, id="log-level", compact=True
            )
            yield Input(placeholder="filter: text in the line", id="log-filter", compact=True)
        log = LogView(self, id="log-view")
        log.border_title = "Log"
        yield log

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def focus_default(self) -> None:
        self.view.focus()

    def show_backlog(self, records: Iterable[tuple[int, str]]) -> None:
        for level, text in records:
            self.add(level, text)

    def shown(self, level: int, text: str) -> bool:
        """Whether the filters let this record through."""
        return level >= self.min_level and self.text_filter in text.lower()

    def add(self, level: int, text: str) -> None:
        self.records.append((level, text))
        view = self.view
        if not view.showing or self._stale:
            self._stale = True
            return
        if self.shown(level, text):
            view.write(line(level, text), width=view.drawn_width)

    def redraw_if_stale(self) -> None:
        """Draw every kept line that passes the filters, wrapped at the width there
        is now, if what is drawn is out of date."""
        view = self.view
        width = view.scrollable_content_region.width
        if width <= 0 or (not self._stale and width == view.drawn_width):
            return
        view.clear()
        for level, text in self.records:
            if self.shown(level, text):
                # The width said outright: RichLog would measure against the app
                # console's width, which need not be the log's.
                view.write(line(level, text), width=width, scroll_end=False)
        view.scroll_end(animate=False, immediate=True)
        view.drawn_width = width
        self._stale = False

    def _filters_changed(self) -> None:
        self._stale = True
        if self.view.showing:
            self.redraw_if_stale()

    @on(Select.Changed, "#log-level")
    def _level_chosen(self, event: Select.Changed) -> None:
        self.min_level = event.value if isinstance(event.value, int) else logging.NOTSET
        self._filters_changed()

    @on(Input.Changed, "#log-filter")
    def _text_typed(self, event: Input.Changed) -> None:
        self.text_filter = event.value.strip().lower()
        self._filters_changed()

    def action_focus_filter(self) -> None:
        self.query_one("#log-filter", Input).focus()

    def action_clear(self) -> None:
        self.records.clear()
        self.view.clear()
