"""The help screen: every key of the dashboard, tab by tab, read from the bindings
(:mod:`shimmy.tui.keymap`), opened at the section of the tab in use."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from shimmy.tui.keymap import Section
from shimmy.tui.plain import plain

INTRO = (
    "shimmy serves your local GGUF models over HTTP while this dashboard runs. "
    "Every action below is also in the command palette (ctrl+p), with its key. "
    "Copying (c on a message, or ctrl+c on text selected with the mouse) goes "
    "through the terminal's clipboard (OSC 52) and says so when done."
)


def section_keys(section: Section) -> Group:
    """A section's keys: one row per key, each part's keys under its name, the
    keys in one column across the section."""
    width = max((len(row.keys) for row in section.rows()), default=0)
    parts: list[RenderableType] = []
    for group in section.groups:
        if group.where:
            parts.append(plain(group.where[:1].upper() + group.where[1:], style="italic"))
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, width=width)
        table.add_column(ratio=1)
        for row in group.rows:
            table.add_row(plain(row.keys, style="bold"), plain(row.text))
        parts.append(table)
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    """Keys and what they do, scrolled to ``start`` (a section's id); any of Esc,
    q or F1 closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,f1", "dismiss", "Close"),
    ]

    def __init__(self, sections: list[Section], start: str | None = None) -> None:
        super().__init__()
        self.sections = sections
        self.start = start

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "Help"
            body.border_subtitle = "Esc to close"
            yield Static(Text(INTRO, style="dim"), classes="help-intro")
            for section in self.sections:
                yield Static(
                    plain(section.title, style="bold"),
                    id=f"help-{section.id}",
                    classes="help-heading",
                )
                yield Static(section_keys(section), classes="help-keys")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()
        if self.start is not None:
            # After the first layout: before it the sections have no place to scroll to.
            self.call_after_refresh(self.scroll_to_section, self.start)

    def scroll_to_section(self, section_id: str) -> None:
        """Show the section's heading at the top."""
        heading = self.query_one(f"#help-{section_id}", Static)
        self.query_one("#help-body", VerticalScroll).scroll_to_widget(
            heading, top=True, animate=False
        )
