"""The dashboard's main screen: Textual's own, its keys said in the dashboard's words
(they are listed in the help and the palette), and a copy that says it copied."""

from __future__ import annotations

from typing import ClassVar

from textual.actions import SkipAction
from textual.binding import Binding, BindingType
from textual.screen import Screen


class DashboardScreen(Screen[None]):
    """The screen the tabs live on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "tab",
            "app.focus_next",
            "Next",
            show=False,
            tooltip="Move to the next part of the tab",
        ),
        Binding(
            "shift+tab",
            "app.focus_previous",
            "Previous",
            show=False,
            tooltip="Move to the previous part of the tab",
        ),
        Binding(
            "ctrl+c,super+c",
            "screen.copy_text",
            "Copy",
            show=False,
            tooltip="Copy the text selected with the mouse",
        ),
    ]

    def action_copy_text(self) -> None:
        """Copy the mouse's selection through the terminal (OSC 52), and say so: the
        terminal gives no sign of its own, and some ignore OSC 52."""
        selection = self.get_selected_text()
        if not selection:
            # Nothing selected: ctrl+c goes on to the app (which says how to quit).
            raise SkipAction()
        self.app.copy_to_clipboard(selection)
        self.notify(f"Copied {len(selection)} characters to the clipboard")
