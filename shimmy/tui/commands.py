"""The command palette's commands: every bound action (from :mod:`shimmy.tui.keymap`,
so a new binding is there at once), with its key, plus the few actions no key
holds. Choosing one shows its tab first, then runs the action where its binding
would (the widget that declares it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from textual.app import SystemCommand
from textual.markup import escape
from textual.widget import Widget

from shimmy.tui.keymap import ANYWHERE, KeyRow, Section

if TYPE_CHECKING:
    from shimmy.tui.app import ShimmyApp
    from shimmy.tui.chat_pane import ChatPane


def command_help(row: KeyRow, section: Section) -> str:
    """The palette's line under a command: its key, and the tab it acts on. The
    palette reads it as markup: a key such as "[" is escaped."""
    where = "" if section.id == ANYWHERE else f" · {section.title}"
    return escape(f"{row.keys}{where}")


def command_title(row: KeyRow, section: Section) -> str:
    """The tooltip says what a key does; a bare label says it with its tab."""
    binding = row.binding
    if binding is not None and binding.tooltip:
        return binding.tooltip
    if section.id == ANYWHERE:
        return row.title
    return f"{row.title} ({section.id.title()})"


def bound_commands(app: ShimmyApp, sections: list[Section]) -> Iterator[SystemCommand]:
    """A command for each bound action that can run now (``check_action``)."""
    for section in sections:
        for row in section.rows():
            binding, node = row.binding, row.node
            if binding is None or node is None:
                continue
            action = binding.action.partition("(")[0].rpartition(".")[2]
            target = app if binding.action.startswith("app.") else node
            if not target.check_action(action, ()):
                continue
            yield SystemCommand(
                command_title(row, section),
                command_help(row, section),
                _runner(app, section.id, row),
            )


def _runner(app: ShimmyApp, tab: str, row: KeyRow) -> Callable[[], object]:
    async def run() -> None:
        node, binding = row.node, row.binding
        assert node is not None and binding is not None
        if tab != ANYWHERE:
            app.action_show_tab(tab)
            # A key of one part of a tab (the messages, the chat list) acts on what
            # that part has under its cursor: give it the focus the key would need.
            if isinstance(node, Widget) and node.focusable and not node.has_focus_within:
                node.focus()
        await app.run_action(binding.action, node)

    return run


def keyless_commands(app: ShimmyApp, chat: ChatPane) -> Iterator[SystemCommand]:
    """Actions no key holds (the Chat tab's, on the open conversation)."""

    def in_chat(action: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            app.action_show_tab("chat")
            action()

        return run

    for title, help_text, action in (
        ("Edit last message", "Chat · or ↑ in an empty box", chat.action_edit_last),
        ("Copy last reply", "Chat · to the terminal's clipboard", chat.action_copy_last_reply),
        ("Copy last code block", "Chat · to the terminal's clipboard", chat.action_copy_last_code),
        ("Rename chat", "Chat · the open conversation", chat.action_rename),
        ("Delete chat", "Chat · the open conversation (asks first)", chat.action_delete),
        ("Go to the messages", "Chat · or shift+Tab from the box", chat.action_focus_messages),
        ("Show / hide chat list", "Chat", chat.action_toggle_sidebar),
    ):
        yield SystemCommand(title, help_text, in_chat(action))
