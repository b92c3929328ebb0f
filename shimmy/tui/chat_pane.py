"""The Chat tab: conversations kept in SQLite, replies streamed in as Markdown.

Every conversation is kept (``shimmy.chats``): the sidebar lists and searches
them (``chat_sidebar.py``), and opening one brings back its model, system prompt
and settings. This pane adds the user's turns, edits and deletes them, opens,
starts, renames and deletes conversations and remembers the settings; each reply
is written by ``chat_reply.py`` (what is sent, the request, the stream, and the
saves that keep a killed process from losing more than a second of it).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Static
from textual.worker import Worker

from shimmy.chats import ChatStore, Conversation, StoredMessage, title_from
from shimmy.errors import ShimmyError
from shimmy.tui.backend import DashboardBackend
from shimmy.tui.chat_log import ChatLog, ChatMessage, ChatNotice
from shimmy.tui.chat_reply import ReplyJob, ReplyWriter
from shimmy.tui.chat_settings import (
    DEFAULT_CHOICE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    ChatSettings,
    ChatSettingsPanel,
)
from shimmy.tui.chat_sidebar import ChatSidebar
from shimmy.tui.composer import Composer
from shimmy.tui.dialogs import ConfirmScreen, RenameScreen
from shimmy.tui.failures import notify_if_failed
from shimmy.tui.plain import plain

__all__ = [
    "DEFAULT_CHOICE",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_TEMPERATURE",
    "ChatMessage",
    "ChatPane",
]

# Seconds of quiet after a settings change before it is saved.
SETTINGS_SAVE_DELAY = 0.5
NEW_CHAT = "New chat"
HINT = (
    "Ask the model anything. Enter sends, ctrl+j adds a line, Esc stops a reply. "
    "ctrl+n starts a new chat, ctrl+r asks again, ↑ in an empty box edits your last "
    "message. Earlier chats are on the left (ctrl+f searches them)."
)
# Preference keys (ChatStore.preference).
LAST_CONVERSATION = "chat.last_conversation"
NEW_CHAT_SETTINGS = "chat.settings"
_NOT_YET = object()


class ChatPane(Vertical):
    """The conversation list, the conversation and its message box, the settings."""

    BINDINGS = [
        Binding(
            "escape", "stop", "Stop", tooltip="Stop the reply; cancel an edit; leave the search"
        ),
        Binding("ctrl+n", "new_chat", "New chat", tooltip="New chat (every chat is kept)"),
        Binding(
            "ctrl+r",
            "regenerate",
            "Regenerate",
            tooltip="Ask again for the last reply (or retry a message that failed)",
        ),
        Binding("ctrl+f", "search", "Search", tooltip="Search every chat's title and messages"),
        Binding(
            "ctrl+l",
            "focus_list",
            "Chats",
            show=False,
            tooltip="Go to the chat list: Enter opens a chat",
        ),
        Binding(
            "ctrl+b",
            "toggle_settings",
            "Settings",
            show=False,
            tooltip="Show / hide the chat settings: model, system prompt, sampling",
        ),
    ]

    @dataclass
    class ReplyFinished(Message):
        """A reply ended (finished, stopped, failed or refused); for tests and the log."""

        text: str
        finish_reason: str | None

    @dataclass
    class ConversationLoaded(Message):
        conversation: Conversation
        messages: list[StoredMessage]
        at_message: int | None = None

    @dataclass
    class Remembered(Message):
        """What a new chat starts with, as the last run left it."""

        settings: dict[str, Any]

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, manager: DashboardBackend, store: ChatStore, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager = manager
        self.store = store
        self.conversation: Conversation | None = None
        self._writer = ReplyWriter(manager, store)
        self._replying = False
        self._reply_worker: Worker[None] | None = None
        self._editing: ChatMessage | None = None
        self._draft = ""  # what the box held before an edit
        self._models_known = False
        self._wanted_model: object = _NOT_YET  # a model to choose once the list is known
        self._settings_timer: Timer | None = None
        self._last_lock = threading.Lock()
        self._last_seq = 0  # which choice of the open conversation is the latest

    def compose(self) -> ComposeResult:
        yield ChatSidebar(self.store, id="chat-sidebar")
        with Vertical(id="chat-main"):
            log = ChatLog(id="chat-log")
            log.border_title = NEW_CHAT
            with log:
                yield Static(Text(HINT, style="dim"), id="chat-hint")
            editing = Static("", id="chat-editing")
            editing.display = False
            yield editing
            yield Composer(
                id="chat-input",
                placeholder="Message · Enter sends · ctrl+j new line",
                soft_wrap=True,
                compact=True,
            )
        settings = ChatSettingsPanel(id="chat-settings")
        settings.border_title = "Settings"
        yield settings

    def on_mount(self) -> None:
        self.log_view.anchor()
        self._restore()

    # -- parts -----------------------------------------------------------------------

    @property
    def log_view(self) -> ChatLog:
        return self.query_one(ChatLog)

    @property
    def composer(self) -> Composer:
        return self.query_one(Composer)

    @property
    def settings(self) -> ChatSettingsPanel:
        return self.query_one(ChatSettingsPanel)

    @property
    def sidebar(self) -> ChatSidebar:
        return self.query_one(ChatSidebar)

    def focus_default(self) -> None:
        self.composer.focus()

    @property
    def history(self) -> list[dict[str, str]]:
        """The turns on screen, as role and content."""
        return [{"role": m.role, "content": m.text} for m in self.log_view.query(ChatMessage)]

    def live_tokens(self) -> int:
        """Tokens of the reply being written (read by the stats thread)."""
        return self._writer.live_tokens()

    @property
    def replying(self) -> bool:
        return self._replying

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        notify_if_failed(self, event)

    # -- models ----------------------------------------------------------------------

    def set_models(self, names: list[str], default: str | None) -> None:
        """Offer these models besides the default (called after each discovery)."""
        self.settings.set_models(names, default)
        self._models_known = True
        self._show_hint(no_model=not names and default is None)
        if self._wanted_model is not _NOT_YET:
            wanted = self._wanted_model
            self._wanted_model = _NOT_YET
            self._choose_model(wanted if isinstance(wanted, str) else None)

    def chat_with(self, name: str) -> None:
        """A new conversation with ``name`` (Enter on the Models tab); the open one is kept."""
        self.action_new_chat()
        self._choose_model(name)

    def _show_hint(self, *, no_model: bool) -> None:
        """The hint of an empty chat: how to chat, or, with no model at all, how
        to get one."""
        text = HINT
        if no_model:
            from shimmy.models.first_model import how_to_get_a_model

            text = f"No model to chat with yet. {how_to_get_a_model(in_dashboard=True)}."
        self.query_one("#chat-hint", Static).update(Text(text, style="dim"))

    def default_changed(self, default: str | None) -> None:
        """The default model changed (``d`` on the Models tab)."""
        self.settings.default_changed(default)

    def _choose_model(self, name: str | None) -> None:
        """Choose a conversation's model; one no longer here is said, and the
        default offered instead."""
        if not self._models_known:
            self._wanted_model = name
            return
        if self.settings.choose_model(name) or name is None:
            return
        default = self.settings.default_name
        instead = f"the default model ({default})" if default else "the default model"
        text = (
            f"This conversation used {name}, which is not on this machine now. "
            f"Replies will come from {instead}; pick another in Settings (ctrl+b)."
        )
        self.log_view.mount(ChatNotice(plain(text), classes="notice"))

    # -- sending -----------------------------------------------------------------------

    @on(Composer.Submitted)
    def _submitted(self, event: Composer.Submitted) -> None:
        event.stop()
        if self._editing is not None:
            if self._finish_edit(event.text):
                self._restore_draft()
            return
        if self.send(event.text):
            event.composer.text = ""

    def send(self, text: str) -> bool:
        """Send ``text`` as the next turn and ask for a reply; false, with nothing
        shown as sent, when it cannot go (empty, a reply running, a bad setting)."""
        if not text.strip():
            return False
        settings = self._ready()
        if settings is None:
            return False
        self._start(self._talk(text.strip("\n"), settings, None, None))
        return True

    def _ready(self) -> ChatSettings | None:
        """The settings to send with, or None (and why, said) when nothing may go."""
        if self._replying:
            self.notify("A reply is being written: Esc stops it", severity="warning")
            return None
        checked = self.settings.read()
        if not isinstance(checked, ChatSettings):
            why, field = checked
            self.notify(why, title="Not sent", severity="error")
            self.settings.display = True
            field.focus()
            return None
        return checked

    def _start(self, job: Any) -> None:
        self._replying = True
        self._writer.stop_requested = False
        self._reply_worker = self.run_worker(
            job, group="chat", exclusive=True, exit_on_error=False, description="chat reply"
        )

    async def wait_for_reply(self, timeout: float) -> None:
        """Let a stopped reply save what it wrote (the app quitting waits for this)."""
        worker = self._reply_worker
        if worker is None or worker.is_finished:
            return
        try:
            await asyncio.wait_for(worker.wait(), timeout)
        except Exception:  # a failed or slow reply: quitting goes on regardless
            return

    async def _talk(
        self,
        text: str | None,
        settings: ChatSettings,
        ask_id: int | None,
        drop_from: int | None,
    ) -> None:
        """Add the user's turn (or take ``ask_id`` again, with ``text`` as its new
        content when given; messages from ``drop_from`` on go first), then reply."""
        store, log = self.store, self.log_view
        model, system = self.settings.model, self.settings.system_prompt
        try:
            conversation = await self._conversation_for(text or "", model, system, settings)
            if drop_from is not None:
                await asyncio.to_thread(store.delete_messages_from, conversation.id, drop_from)
                for widget in list(log.query(ChatMessage)):
                    if widget.message_id is not None and widget.message_id >= drop_from:
                        await widget.remove()
            if ask_id is None:
                assert text is not None
                ask = await asyncio.to_thread(store.add_message, conversation.id, "user", text)
                ask_widget = ChatMessage.stored(ask)
                self.query_one("#chat-hint").display = False
                await log.mount(ask_widget)
            else:
                if text is not None:
                    await asyncio.to_thread(store.update_message, ask_id, content=text, error=None)
                else:
                    await asyncio.to_thread(store.update_message, ask_id, error=None)
                ask = await asyncio.to_thread(store.message, ask_id)
                ask_widget = self._widget_of(ask_id) or ChatMessage.stored(ask)
                await ask_widget.set_text(ask.content)
                ask_widget.show_problem(None)
            self.sidebar.reload()
            earlier = [
                m for m in await asyncio.to_thread(store.messages, conversation.id) if m.id < ask.id
            ]
            reply = ChatMessage("assistant")
            await log.mount(reply)
            log.scroll_end(animate=False)
            text, finish_reason = await self._writer.write(
                ReplyJob(conversation, ask, ask_widget, reply, earlier, model, system, settings)
            )
            self.sidebar.reload()
            self.post_message(self.ReplyFinished(text, finish_reason))
        finally:
            self._replying = False

    async def _conversation_for(
        self, text: str, model: str | None, system: str, settings: ChatSettings
    ) -> Conversation:
        """The open conversation, kept in step with the settings; a new one (titled
        from its first message) when none is open."""
        conversation = self.conversation
        if conversation is None:
            conversation = await asyncio.to_thread(
                self.store.create_conversation,
                title_from(text),
                model=model,
                system_prompt=system,
                settings=settings.to_json(),
            )
            self._remember_open(conversation.id)
        else:
            conversation = await asyncio.to_thread(
                self.store.update_conversation,
                conversation.id,
                model=model,
                system_prompt=system,
                settings=settings.to_json(),
            )
        self._opened(conversation)
        return conversation

    def _opened(self, conversation: Conversation | None) -> None:
        self.conversation = conversation
        self.log_view.border_title = plain(conversation.title) if conversation else NEW_CHAT
        self.sidebar.mark_open(conversation.id if conversation else None)

    # -- edits -------------------------------------------------------------------------

    def _widget_of(self, message_id: int) -> ChatMessage | None:
        for widget in self.log_view.query(ChatMessage):
            if widget.message_id == message_id:
                return widget
        return None

    def _last_ask(self) -> ChatMessage | None:
        asks = [m for m in self.log_view.query(ChatMessage) if m.role == "user"]
        return asks[-1] if asks else None

    def action_edit_last(self) -> None:
        """Edit your last message (Enter then sends it again)."""
        ask = self._last_ask()
        if ask is None:
            self.notify("No message of yours to edit yet")
            return
        self.edit(ask)

    @on(Composer.ScrollRequested)
    def _scroll_requested(self, event: Composer.ScrollRequested) -> None:
        event.stop()
        if event.pages < 0:
            self.log_view.scroll_page_up()
        else:
            self.log_view.scroll_page_down()

    @on(Composer.EditLast)
    def _edit_last(self, event: Composer.EditLast) -> None:
        event.stop()
        self.action_edit_last()

    @on(ChatLog.EditRequested)
    def _edit_requested(self, event: ChatLog.EditRequested) -> None:
        event.stop()
        self.edit(event.message)

    def edit(self, message: ChatMessage) -> None:
        """Put ``message`` in the box to edit it."""
        if message.message_id is None or (self._replying and message is self._last_reply()):
            self.notify("That reply is still being written", severity="warning")
            return
        if self._editing is None:
            self._draft = self.composer.text
        self._editing = message
        resend = message is self._last_ask()
        what = (
            "your last message"
            if resend
            else ("your message" if message.role == "user" else "the reply")
        )
        after = "saves and asks again" if resend else "saves"
        banner = self.query_one("#chat-editing", Static)
        banner.update(Text(f"Editing {what} · Enter {after} · Esc cancels", style="bold"))
        banner.display = True
        self.composer.text = message.text
        self.composer.focus()
        self.composer.move_cursor(self.composer.document.end)

    def _last_reply(self) -> ChatMessage | None:
        messages = self.log_view.query(ChatMessage)
        return messages.last() if messages and messages.last().role == "assistant" else None

    def _finish_edit(self, text: str) -> bool:
        """Save the edit; the last message of yours is sent again. False: not done."""
        message = self._editing
        if message is None or message.message_id is None:
            return True
        if not text.strip():
            self.notify(
                "An empty message cannot be kept: delete it instead (x)", severity="warning"
            )
            return False
        if message is self._last_ask():
            settings = self._ready()
            if settings is None:
                return False
            later = [
                m.message_id
                for m in self.log_view.query(ChatMessage)
                if m.message_id is not None and m.message_id > message.message_id
            ]
            self._start(self._talk(text, settings, message.message_id, min(later, default=None)))
        else:
            self._save_edit(message, text)
        return True

    @work(group="chat-edit", exit_on_error=False, description="edit")
    async def _save_edit(self, message: ChatMessage, text: str) -> None:
        assert message.message_id is not None
        await asyncio.to_thread(self.store.update_message, message.message_id, content=text)
        await message.set_text(text)
        self.sidebar.reload()

    def _restore_draft(self) -> None:
        self._editing = None
        self.query_one("#chat-editing", Static).display = False
        self.composer.text = self._draft
        self._draft = ""

    @on(ChatLog.DeleteRequested)
    def _delete_requested(self, event: ChatLog.DeleteRequested) -> None:
        event.stop()
        message = event.message
        if message.message_id is None or (self._replying and message is self._last_reply()):
            self.notify("That reply is still being written: Esc stops it", severity="warning")
            return
        if message is self._editing:
            self._restore_draft()
        self._delete_message(message)

    @work(group="chat-edit", exit_on_error=False, description="delete message")
    async def _delete_message(self, message: ChatMessage) -> None:
        assert message.message_id is not None
        await asyncio.to_thread(self.store.delete_message, message.message_id)
        log = self.log_view
        stops = log.stops()
        after = [s for s in stops[stops.index(message) + 1 :] if isinstance(s, ChatMessage)]
        await message.remove()
        remaining = log.query(ChatMessage)
        log.place_cursor(after[0] if after else (remaining.last() if remaining else None))
        self.notify("Message deleted")

    # -- conversations -----------------------------------------------------------------

    @work(thread=True, group="chat-open", exit_on_error=False, description="restore chat")
    def _restore(self) -> None:
        """Open the conversation the last run left open, or its new-chat settings."""
        last = self.store.preference(LAST_CONVERSATION)
        if isinstance(last, int):
            try:
                conversation = self.store.conversation(last)
            except ShimmyError:  # deleted since (by `shimmy chats rm`, say)
                pass
            else:
                messages = self.store.messages(last)
                self.post_message(self.ConversationLoaded(conversation, messages))
                return
        remembered = self.store.preference(NEW_CHAT_SETTINGS)
        if isinstance(remembered, dict):
            self.post_message(self.Remembered(remembered))

    @on(Remembered)
    def _remembered(self, message: Remembered) -> None:
        values = message.settings
        prompt = values.get("system_prompt")
        self.settings.show(
            ChatSettings.from_json(values), prompt if isinstance(prompt, str) else ""
        )
        model = values.get("model")
        self._choose_model(model if isinstance(model, str) else None)

    @on(ChatSidebar.OpenRequested)
    def _open_requested(self, event: ChatSidebar.OpenRequested) -> None:
        event.stop()
        self.open(event.conversation_id, event.message_id)

    def open(self, conversation_id: int, at_message: int | None = None) -> None:
        """Open a conversation (at a message, for a search's match)."""
        if self._replying:
            self.notify("A reply is being written: Esc stops it", severity="warning")
            return
        self._read_conversation(conversation_id, at_message)

    @work(thread=True, group="chat-open", exclusive=True, exit_on_error=False, description="open")
    def _read_conversation(self, conversation_id: int, at_message: int | None) -> None:
        conversation = self.store.conversation(conversation_id)
        messages = self.store.messages(conversation_id)
        self.post_message(self.ConversationLoaded(conversation, messages, at_message))

    @on(ConversationLoaded)
    async def _show_conversation(self, message: ConversationLoaded) -> None:
        if self._replying:
            return
        if self._editing is not None:
            self._restore_draft()
        conversation = message.conversation
        # Open at once: a message sent while the turns are mounted belongs to it.
        self._opened(conversation)
        self._remember_open(conversation.id)
        log = self.log_view
        await log.query(ChatMessage).remove()
        await log.query(ChatNotice).remove()
        self.query_one("#chat-hint").display = not message.messages
        await log.mount_all([ChatMessage.stored(m) for m in message.messages])
        self.settings.show(
            ChatSettings.from_json(conversation.settings), conversation.system_prompt
        )
        self._choose_model(conversation.model)
        if message.at_message is not None and log.select_message(message.at_message):
            log.focus()
        else:
            log.scroll_end(animate=False)

    def action_new_chat(self) -> None:
        """Start a new conversation (the open one is kept)."""
        if self._replying:
            self.action_stop()
            self._new_chat_after_reply()
            return
        self.clear_for_new_chat()

    @work(group="chat-open", exclusive=True, exit_on_error=False, description="new chat")
    async def _new_chat_after_reply(self) -> None:
        await self.wait_for_reply(5)  # it saves what it wrote into the old conversation
        self.clear_for_new_chat()

    def clear_for_new_chat(self) -> None:
        """Empty the tab for a new conversation, at once: a message typed right after
        ctrl+n must not land in the conversation that was open."""
        if self._editing is not None:
            self._restore_draft()
        log = self.log_view
        log.query(ChatMessage).remove()
        log.query(ChatNotice).remove()
        self.query_one("#chat-hint").display = True
        self._opened(None)
        self.composer.focus()
        self._remember_open(None)

    def _remember_open(self, conversation_id: int | None) -> None:
        """Keep which conversation is open, for the next run."""
        with self._last_lock:
            self._last_seq += 1
            seq = self._last_seq
        self._write_last_open(seq, conversation_id)

    @work(thread=True, group="chat-last", exit_on_error=False, description="remember chat")
    def _write_last_open(self, seq: int, conversation_id: int | None) -> None:
        # Threads may run out of order: only the latest choice is written last.
        with self._last_lock:
            if seq == self._last_seq:
                self.store.set_preference(LAST_CONVERSATION, conversation_id)

    def _target(self) -> Conversation | None:
        """What rename and delete act on: the highlighted conversation while the
        list has focus, else the open one."""
        sidebar = self.sidebar
        if sidebar.option_list.has_focus:
            return sidebar.highlighted_conversation()
        return self.conversation

    @on(ChatSidebar.ActOn)
    def _act_on(self, event: ChatSidebar.ActOn) -> None:
        event.stop()
        if event.action == "new":
            self.action_new_chat()
        elif event.action == "rename":
            self.rename(event.conversation)
        elif event.action == "delete":
            self.delete(event.conversation)

    def action_rename(self) -> None:
        self.rename(self._target())

    def action_delete(self) -> None:
        self.delete(self._target())

    def rename(self, conversation: Conversation | None) -> None:
        """Ask for a new title."""
        if conversation is None:
            self.notify("No conversation to rename: send a message first", severity="warning")
            return

        def renamed(title: str | None) -> None:
            if title and title != conversation.title:
                self._rename(conversation.id, title)

        self.app.push_screen(RenameScreen(conversation.title), renamed)

    @work(thread=True, group="chat-edit", exit_on_error=False, description="rename")
    def _rename(self, conversation_id: int, title: str) -> None:
        conversation = self.store.update_conversation(conversation_id, title=title)
        self.app.call_from_thread(self._renamed, conversation)

    def _renamed(self, conversation: Conversation) -> None:
        if self.conversation is not None and self.conversation.id == conversation.id:
            self._opened(conversation)
        self.sidebar.reload()

    def delete(self, conversation: Conversation | None) -> None:
        """Delete a conversation, once the user said yes."""
        if conversation is None:
            self.notify("No conversation to delete", severity="warning")
            return
        if self._replying and self.conversation and self.conversation.id == conversation.id:
            self.notify("A reply is being written: Esc stops it", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete_conversation(conversation)

        question = f"Delete the conversation '{conversation.title}' and all its messages?"
        self.app.push_screen(ConfirmScreen(question + " This cannot be undone."), answered)

    @work(group="chat-edit", exit_on_error=False, description="delete conversation")
    async def _delete_conversation(self, conversation: Conversation) -> None:
        await asyncio.to_thread(self.store.delete_conversation, conversation.id)
        if self.conversation is not None and self.conversation.id == conversation.id:
            self.clear_for_new_chat()
        self.sidebar.reload()
        self.notify(f"Deleted '{conversation.title}'")

    # -- settings ------------------------------------------------------------------------

    @on(ChatSettingsPanel.Changed)
    def _settings_changed(self, event: ChatSettingsPanel.Changed) -> None:
        event.stop()
        if self._settings_timer is not None:
            self._settings_timer.stop()
        self._settings_timer = self.set_timer(SETTINGS_SAVE_DELAY, self._save_settings)

    def _settings_to_save(self) -> tuple[int | None, ChatSettings, str | None, str] | None:
        checked = self.settings.read()
        if not isinstance(checked, ChatSettings):
            return None
        conversation_id = self.conversation.id if self.conversation else None
        return conversation_id, checked, self.settings.model, self.settings.system_prompt

    def _save_settings(self) -> None:
        self._settings_timer = None
        values = self._settings_to_save()
        if values is not None:
            self._write_settings_in_thread(*values)

    async def save_pending_settings(self) -> None:
        """Save a settings change still waiting for its quiet time (before quitting)."""
        if self._settings_timer is None:
            return
        self._settings_timer.stop()
        self._settings_timer = None
        values = self._settings_to_save()
        if values is not None:
            await asyncio.to_thread(self.write_settings, *values)

    @work(thread=True, group="chat-settings", exit_on_error=False, description="save settings")
    def _write_settings_in_thread(
        self, conversation_id: int | None, settings: ChatSettings, model: str | None, system: str
    ) -> None:
        self.write_settings(conversation_id, settings, model, system)

    def write_settings(
        self, conversation_id: int | None, settings: ChatSettings, model: str | None, system: str
    ) -> None:
        """Keep the settings with the conversation, and for new chats (blocks)."""
        remembered = {**settings.to_json(), "model": model, "system_prompt": system}
        self.store.set_preference(NEW_CHAT_SETTINGS, remembered)
        if conversation_id is not None:
            try:
                self.store.update_conversation(
                    conversation_id, model=model, system_prompt=system, settings=settings.to_json()
                )
            except ShimmyError:  # deleted meanwhile
                pass

    # -- actions ---------------------------------------------------------------------

    def action_stop(self) -> None:
        """Esc: stop the reply being written (it keeps what it wrote so far); else
        cancel an edit, leave the search, or go back to the message box."""
        if self._replying:
            self._writer.stop()
            return
        if self._editing is not None:
            self._restore_draft()
            return
        focused = self.app.focused
        if focused is not None and self.sidebar in focused.ancestors_with_self:
            if self.sidebar.clear_search():
                return
        self.composer.focus()

    def action_regenerate(self) -> None:
        """Ask again for the last reply (or for a message that failed)."""
        settings = self._ready()
        if settings is None:
            return
        messages = list(self.log_view.query(ChatMessage))
        asks = [m for m in messages if m.role == "user" and m.message_id is not None]
        if not asks:
            self.notify("Nothing to regenerate yet")
            return
        ask = asks[-1]
        after = [m.message_id for m in messages[messages.index(ask) + 1 :] if m.message_id]
        self._start(self._talk(None, settings, ask.message_id, min(after, default=None)))

    def action_copy_last_reply(self) -> None:
        reply = next(
            (m for m in reversed(list(self.log_view.query(ChatMessage))) if m.role == "assistant"),
            None,
        )
        if reply is None:
            self.notify("No reply to copy yet")
            return
        self.app.copy_to_clipboard(reply.text)
        self.notify(f"Copied the reply to the clipboard ({len(reply.text)} characters)")

    def action_copy_last_code(self) -> None:
        for message in reversed(list(self.log_view.query(ChatMessage))):
            blocks = message.code_blocks()
            if blocks:
                self.app.copy_to_clipboard(blocks[-1].code)
                code = blocks[-1].code
                self.notify(f"Copied the code block to the clipboard ({len(code)} characters)")
                return
        self.notify("No code block to copy yet")

    def action_search(self) -> None:
        self.sidebar.display = True
        self.sidebar.focus_search()

    def action_focus_list(self) -> None:
        self.sidebar.display = True
        options = self.sidebar.option_list
        options.focus()
        if options.highlighted is None and options.option_count:
            options.highlighted = 0

    def action_toggle_sidebar(self) -> None:
        self.sidebar.display = not self.sidebar.display

    def action_toggle_settings(self) -> None:
        self.settings.display = not self.settings.display

    def action_focus_messages(self) -> None:
        self.log_view.focus()
