"""The conversation on screen: one widget per turn, and a cursor over them.

With the log focused, up and down move a cursor over the messages and over each
code block of a reply, so that ``c`` copies exactly what is under it (through
the terminal's clipboard, OSC 52), ``e`` edits the message and ``x`` deletes
it. The user's text is literal; a reply is Markdown (Textual's Markdown widget,
which never reads Rich or Textual markup: ``[@click=...]`` in a reply is text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownFence

from shimmy.chats import StoredMessage
from shimmy.chats.export import message_figures
from shimmy.tui.plain import plain


class ChatMessage(Vertical):
    """One turn: the user's text, or the model's Markdown reply and its figures,
    with what went wrong (``problem``) or what the chat did (``note``) under it."""

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(
        self,
        role: str,
        text: str = "",
        *,
        message_id: int | None = None,
        figures: Text | None = None,
        note: str | None = None,
        problem: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(classes=f"message {role}", **kwargs)
        self.role = role
        self.text = text
        self.shown_text = text  # what is on screen, the streamed part of a reply too
        self.message_id = message_id
        self._figures = figures
        self._note = note
        self._problem = problem

    @classmethod
    def stored(cls, message: StoredMessage) -> ChatMessage:
        """A turn as the database has it."""
        figures = None
        if message.role == "assistant" and message.error is None:
            figures = Text(message_figures(message), style="dim")
        return cls(
            message.role,
            message.content,
            message_id=message.id,
            figures=figures,
            note=message.note,
            problem=message.error,
        )

    def compose(self) -> ComposeResult:
        if self.role == "user":
            yield Static(plain(self.text), classes="body")
        else:
            yield Markdown(self.text, classes="body")
            streaming = Static(classes="streaming")
            streaming.display = False
            yield streaming
            yield Static(self._figures or Text("thinking…", style="dim italic"), classes="figures")
        note = Static(plain(self._note or "", style="dim italic"), classes="note")
        note.display = bool(self._note)
        yield note
        problem = Static(plain(self._problem or "", style="red"), classes="problem")
        problem.display = bool(self._problem)
        yield problem

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    def show_figures(self, text: Text) -> None:
        self.query_one(".figures", Static).update(text)

    def show_note(self, note: str | None) -> None:
        widget = self.query_one(".note", Static)
        widget.update(plain(note or "", style="dim italic"))
        widget.display = bool(note)

    def show_problem(self, problem: str | None) -> None:
        widget = self.query_one(".problem", Static)
        widget.update(plain(problem or "", style="red"))
        widget.display = bool(problem)

    async def set_text(self, text: str) -> None:
        """Show edited text."""
        self.text = text
        if self.role == "user":
            self.query_one(".body", Static).update(plain(text))
        else:
            await self.markdown.update(text)

    def stream_text(self, text: str) -> None:
        """Show a reply that is still coming: drawn by Rich into one Static, not
        Textual's Markdown, which mounts a widget per block and remounts the
        last one (a whole list, in most replies) on every redraw, on the cores
        that llama.cpp's threads need. The text is Markdown, never console
        markup, whatever the model writes."""
        from rich.markdown import Markdown as RichMarkdown

        self.shown_text = text
        streaming = self.query_one(".streaming", Static)
        if not streaming.display:
            self.markdown.display = False
            streaming.display = True
        streaming.update(RichMarkdown(text, code_theme="ansi_dark", hyperlinks=False))

    async def finish_text(self, text: str) -> None:
        """The reply is complete: drawn once by the Markdown widget, whose code
        blocks the cursor can reach and copy."""
        self.text = self.shown_text = text
        await self.markdown.update(text)
        self.markdown.display = True
        self.query_one(".streaming", Static).display = False

    def code_blocks(self) -> list[MarkdownFence]:
        """The reply's code blocks, in order."""
        if self.role == "user":
            return []
        return list(self.query(MarkdownFence))


class ChatNotice(Static):
    """A line the chat says (a model that is gone, a conversation cut short)."""


class ChatLog(VerticalScroll):
    """The turns of the open conversation, with a cursor for keys."""

    can_focus = True

    KEYS_WHERE = "in the messages (shift+Tab from the message box)"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1)", "Up", show=False, tooltip="The message or code block above"),
        Binding("down,j", "move(1)", "Down", show=False, tooltip="The message or code block below"),
        Binding("home", "move_to(0)", "First", show=False, tooltip="The first message"),
        Binding("end", "move_to(-1)", "Last", show=False, tooltip="The last message"),
        Binding("pageup", "page_up", "Page up", show=False, tooltip="Scroll the chat up a page"),
        Binding(
            "pagedown", "page_down", "Page down", show=False, tooltip="Scroll the chat down a page"
        ),
        Binding(
            "c",
            "copy",
            "Copy",
            tooltip="Copy the message or code block under the cursor (terminal clipboard, OSC 52)",
        ),
        Binding("e", "edit", "Edit", tooltip="Edit the message under the cursor"),
        Binding("x,delete", "delete", "Delete", tooltip="Delete the message under the cursor"),
    ]

    @dataclass
    class EditRequested(Message):
        message: ChatMessage

    @dataclass
    class DeleteRequested(Message):
        message: ChatMessage

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cursor: Widget | None = None  # a ChatMessage or one of its code blocks

    # -- the cursor --------------------------------------------------------------

    def stops(self) -> list[Widget]:
        """Where the cursor can be: each message, then each of its code blocks."""
        found: list[Widget] = []
        for message in self.query(ChatMessage):
            found.append(message)
            found.extend(message.code_blocks())
        return found

    @property
    def cursor(self) -> Widget | None:
        if self._cursor is not None and not self._cursor.is_attached:
            self._cursor = None
        return self._cursor

    @property
    def cursor_message(self) -> ChatMessage | None:
        """The message under the cursor (the one holding the code block under it)."""
        cursor = self.cursor
        if cursor is None:
            return None
        if isinstance(cursor, ChatMessage):
            return cursor
        for ancestor in cursor.ancestors:
            if isinstance(ancestor, ChatMessage):
                return ancestor
        return None

    def place_cursor(self, target: Widget | None) -> None:
        if self._cursor is not None:
            self._cursor.remove_class("-cursor")
        self._cursor = target
        if target is not None:
            target.add_class("-cursor")
            self.scroll_to_widget(target, animate=False, top=isinstance(target, ChatMessage))

    def on_focus(self) -> None:
        if self.cursor is None:
            messages = self.query(ChatMessage)
            if messages:
                self.place_cursor(messages.last())

    def action_move(self, step: int) -> None:
        stops = self.stops()
        if not stops:
            return
        cursor = self.cursor
        index = stops.index(cursor) + step if cursor in stops else len(stops) - 1
        self.place_cursor(stops[max(0, min(index, len(stops) - 1))])

    def action_move_to(self, index: int) -> None:
        stops = self.stops()
        if stops:
            self.place_cursor(stops[index])

    def select_message(self, message_id: int) -> bool:
        """Put the cursor on the message with this id (a search's match)."""
        for message in self.query(ChatMessage):
            if message.message_id == message_id:
                self.place_cursor(message)
                return True
        return False

    # -- what the cursor is on ------------------------------------------------------

    def copy_text(self) -> tuple[str, str] | None:
        """What ``c`` copies and what to call it: the code block or the message."""
        cursor = self.cursor
        if isinstance(cursor, MarkdownFence):
            return cursor.code, "the code block"
        message = self.cursor_message
        if message is None:
            return None
        return message.text, "your message" if message.role == "user" else "the reply"

    def action_copy(self) -> None:
        found = self.copy_text()
        if found is None:
            self.notify("No message here to copy", severity="warning")
            return
        text, what = found
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {what} to the clipboard ({len(text)} characters)")

    def action_edit(self) -> None:
        message = self.cursor_message
        if message is not None:
            self.post_message(self.EditRequested(message))

    def action_delete(self) -> None:
        message = self.cursor_message
        if message is not None:
            self.post_message(self.DeleteRequested(message))
