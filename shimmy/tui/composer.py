"""The Chat tab's message box: several lines, Enter sends.

A one-line Input dropped every pasted line after the first and scrolled a long
message sideways. This is a TextArea that wraps and grows with its text (up to
a limit, then scrolls); a paste arrives whole, lines and all. Enter sends;
ctrl+j adds a line, as do shift+enter and alt+enter in terminals that tell
them from Enter. Up in an empty box edits the last message sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

NEW_LINE_KEYS = frozenset({"ctrl+j", "shift+enter", "alt+enter"})


class TextField(TextArea):
    """A TextArea that leaves F6 to the dashboard (the Hub tab). TextArea binds F6
    to "select line", so with the message box focused F6 never left the Chat tab;
    a binding whose action is refused here passes its key on to the app."""

    # parameters: the action's arguments, as Textual hands them (none here).
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "select_line":
            return False
        return super().check_action(action, parameters)


class Composer(TextField):
    """A multi-line message box that posts :class:`Composer.Submitted` on Enter."""

    DEFAULT_CSS = """
    Composer {
        height: auto;
        min-height: 3;
        max-height: 12;
    }
    """

    KEYS_WHERE = "in the message box"
    # The box is a few lines high: PgUp and PgDn scroll the conversation above it,
    # as chat programs do, instead of paging through the box.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("pageup", "scroll_chat(-1)", "Page up", show=False, tooltip="Scroll the chat up"),
        Binding(
            "pagedown", "scroll_chat(1)", "Page down", show=False, tooltip="Scroll the chat down"
        ),
    ]

    @dataclass
    class ScrollRequested(Message):
        """PgUp (``pages`` -1) or PgDn (1) in the box: scroll the conversation."""

        pages: int

    @dataclass
    class Submitted(Message):
        """Enter was pressed: ``text`` is the whole message."""

        composer: Composer
        text: str

    @dataclass
    class EditLast(Message):
        """Up in an empty box: edit the last message sent (as in Slack or Discord)."""

    def action_scroll_chat(self, pages: int) -> None:
        self.post_message(self.ScrollRequested(pages))

    async def _on_key(self, event: events.Key) -> None:
        if self.read_only:
            return
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key == "up" and not self.text:
            event.stop()
            event.prevent_default()
            self.post_message(self.EditLast())
            return
        if event.key in NEW_LINE_KEYS:
            event.stop()
            event.prevent_default()
            result = self.replace("\n", *self.selection, maintain_selection_offset=False)
            self.move_cursor(result.end_location)
            return
        await super()._on_key(event)
