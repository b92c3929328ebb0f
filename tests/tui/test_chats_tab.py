"""The Chat tab's conversations against a real chats database in a temporary
folder (replies from the fake manager: fixed text, a word a token): the sidebar,
new, rename, delete, search, resume, edit, delete and copy a message, the
multi-line box, settings checked as typed, and what is kept across a restart.
The real model's replies are in test_chat_pane.py."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual import events
from textual.command import CommandList, CommandPalette
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static, TextArea

from shimmy.chats import ChatStore
from shimmy.chats.window import STOP
from shimmy.errors import ShimmyError
from shimmy.models.generation import Piece
from shimmy.tui.app import LIGHT_THEME, ShimmyApp
from shimmy.tui.chat_log import ChatLog, ChatMessage, ChatNotice
from shimmy.tui.chat_pane import ChatPane
from shimmy.tui.composer import Composer
from shimmy.tui.dialogs import ConfirmScreen, RenameScreen
from shimmy.tui.help_screen import HelpScreen
from tests.tui.fakes import REPLY, FakeManager, FakeServer
from tests.waiting import settle

pytestmark = pytest.mark.anyio

MODEL = "smollm2-135m-instruct-q4_1"
SIZE = (140, 40)


class Recorder:
    """The notifications and finished replies of an app (once each: a message that
    bubbles is handled by several widgets)."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.finished: list[ChatPane.ReplyFinished] = []
        self._kept: dict[int, object] = {}  # kept alive, so that no id is reused

    def __call__(self, message: object) -> None:
        if not isinstance(message, Notify | ChatPane.ReplyFinished) or id(message) in self._kept:
            return
        self._kept[id(message)] = message
        if isinstance(message, Notify):
            self.notes.append(message.notification.message)
        elif isinstance(message, ChatPane.ReplyFinished):
            self.finished.append(message)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChatStore]:
    store = ChatStore(tmp_path / "chats.db")
    yield store
    store.close()


def dashboard(store: ChatStore, manager: FakeManager | None = None) -> ShimmyApp:
    manager = manager or FakeManager()
    return ShimmyApp(
        manager, FakeServer(manager), stats_interval=0, initial_tab="chat", chats=store
    )


async def ready(pilot: Pilot[Any]) -> ChatPane:
    """The pane once discovery reached it (the model list is known)."""
    pane = pilot.app.query_one(ChatPane)
    await settle(pilot, lambda: pane.settings.model_names, what="the model list")
    return pane


async def send(pilot: Pilot[Any], record: Recorder, text: str) -> ChatPane.ReplyFinished:
    """Type ``text`` into the box, press Enter and wait for the reply's end."""
    before = len(record.finished)
    await pilot.press(*text, "enter")
    await settle(pilot, lambda: len(record.finished) > before, what="the reply")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return record.finished[-1]


def turns(pane: ChatPane) -> list[tuple[str, str]]:
    return [(m.role, m.text.strip()) for m in pane.log_view.query(ChatMessage)]


def sidebar_titles(pane: ChatPane) -> list[str]:
    return [c.title for c in pane.sidebar.conversations]


# -- sending and the message box ----------------------------------------------------


async def test_a_message_starts_a_conversation_kept_in_the_database(store: ChatStore) -> None:
    record = Recorder()
    app = dashboard(store)
    async with app.run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        assert app.query_one(Composer).has_focus
        await send(pilot, record, "How do I write clear code?")
        assert turns(pane) == [("user", "How do I write clear code?"), ("assistant", REPLY.strip())]
        (chat,) = store.conversations()
        assert chat.title == "How do I write clear code?"
        assert chat.model is None and chat.settings["temperature"] == 0.7
        ask, reply = store.messages(chat.id)
        assert ask.content == "How do I write clear code?"
        assert reply.content.strip() == REPLY.strip()
        assert (reply.model, reply.tokens, reply.finish_reason) == (MODEL, 48, "stop")
        # The reply says which model wrote it; the sidebar lists the conversation.
        figures = str(pane.log_view.query(ChatMessage).last().query_one(".figures", Static).content)
        assert figures.startswith(f"{MODEL} · 48 tokens · 91.4 tok/s")
        await settle(pilot, lambda: sidebar_titles(pane) == [chat.title], what="the sidebar")
        assert str(pane.log_view.border_title) == chat.title


async def test_a_three_line_paste_is_sent_whole(store: ChatStore) -> None:
    manager = FakeManager()
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        composer = pane.composer
        # As the terminal delivers a paste: to the app, which hands it to the focus.
        pilot.app.post_message(events.Paste("first line\nsecond line\nthird line"))
        await settle(pilot, lambda: composer.text == "first line\nsecond line\nthird line")
        await pilot.press("ctrl+j", *"and a fourth")  # ctrl+j adds a line; Enter sends
        assert composer.text.count("\n") == 3
        await send(pilot, record, "")
        expected = "first line\nsecond line\nthird line\nand a fourth"
        assert turns(pane)[0] == ("user", expected)
        assert manager.sent[-1][-1] == {"role": "user", "content": expected}
        (chat,) = store.conversations()
        assert store.messages(chat.id)[0].content == expected
        assert chat.title == "first line"
        assert composer.text == ""


async def test_an_invalid_temperature_is_refused_before_sending(store: ChatStore) -> None:
    manager = FakeManager()
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        field = app_field(pilot, "#temperature")
        field.focus()
        await pilot.press("ctrl+a", "ctrl+k", "-")
        # Said as it is typed, before anything is sent.
        error = pilot.app.query_one("#temperature-error", Static)
        await settle(pilot, lambda: error.display, what="the field's error")
        assert "must be a number from 0 to 2" in str(error.content)
        assert field.has_class("-invalid")
        pane.composer.focus()
        await pilot.press(*"hello", "enter")
        await pilot.pause()
        assert not pilot.app.query(ChatMessage)  # nothing shown as sent
        assert pane.composer.text == "hello"  # nor cleared
        assert manager.sent == [] and store.conversations() == []
        assert any("Temperature must be a number from 0 to 2" in n for n in record.notes)
        assert field.has_focus  # the field to fix
        await pilot.press("backspace", "0", ".", "2")
        await settle(pilot, lambda: not error.display)
        pane.composer.focus()
        await send(pilot, record, "")
        assert turns(pane)[0] == ("user", "hello")


def app_field(pilot: Pilot[Any], selector: str) -> Input:
    return pilot.app.query_one(selector, Input)


async def test_the_system_prompt_looks_empty_and_the_default_is_named(store: ChatStore) -> None:
    async with dashboard(store).run_test(size=SIZE) as pilot:
        pane = await ready(pilot)
        prompt = pilot.app.query_one("#system-prompt", TextArea)
        assert prompt.text == "" and prompt.placeholder == "(none)"
        named = pilot.app.query_one("#default-model-name", Static)
        assert named.display and str(named.content) == MODEL
        select = pilot.app.query_one("#chat-model", Select)
        select.value = "llama3.2:3b"
        await pilot.pause()
        assert not named.display
        assert pane.settings.model == "llama3.2:3b"


# -- the sidebar ---------------------------------------------------------------------


def three_chats(store: ChatStore) -> list[int]:
    ids = []
    for i, (title, model) in enumerate(
        [("Old soup recipes", MODEL), ("Sorting in Python", None), ("Lighthouses", "llama3.2:3b")]
    ):
        chat = store.create_conversation(
            title,
            model=model,
            system_prompt=f"prompt {i}",
            settings={"temperature": 0.1 * (i + 1), "max_tokens": 100 + i, "context_policy": STOP},
            now=1000.0 + i,
        )
        store.add_message(chat.id, "user", f"question about {title.lower()}", now=1000.5 + i)
        reply = store.add_message(
            chat.id,
            "assistant",
            f"answer {i}\n\n```\ncode {i}\n```",
            model=model or MODEL,
            now=1000.6 + i,
        )
        store.update_message(reply.id, tokens=5, finish_reason="stop")
        ids.append(chat.id)
    return ids


async def test_the_sidebar_lists_most_recent_first_and_opens_one(store: ChatStore) -> None:
    ids = three_chats(store)
    async with dashboard(store).run_test(size=SIZE) as pilot:
        pane = await ready(pilot)
        await settle(pilot, lambda: len(pane.sidebar.conversations) == 3)
        assert sidebar_titles(pane) == ["Lighthouses", "Sorting in Python", "Old soup recipes"]
        options = pane.sidebar.option_list
        second = str(options.get_option_at_index(1).prompt)
        assert second == "Sorting in Python\n1970-01-01 · default"
        assert str(options.get_option_at_index(0).prompt).endswith(" · llama3.2:3b")
        await pilot.press("ctrl+l", "down", "enter")
        await settle(
            pilot, lambda: pane.conversation is not None and pane.conversation.id == ids[1]
        )
        await settle(pilot, lambda: len(turns(pane)) == 2)
        assert turns(pane)[0] == ("user", "question about sorting in python")
        # Its settings came back with it.
        assert pane.settings.system_prompt == "prompt 1"
        assert app_field(pilot, "#temperature").value == "0.2"
        assert app_field(pilot, "#max-tokens").value == "101"
        assert pilot.app.query_one("#context-policy", Select).value == STOP
        assert pane.settings.model is None


async def test_resuming_restores_the_model_or_says_it_is_gone(store: ChatStore) -> None:
    ids = three_chats(store)
    manager = FakeManager()
    manager.registry.items = [e for e in manager.registry.items if e.name != "llama3.2:3b"]
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        pane.open(ids[0])
        await settle(
            pilot, lambda: pane.conversation is not None and pane.conversation.id == ids[0]
        )
        assert pane.settings.model == MODEL
        assert not pane.log_view.query(ChatNotice)
        pane.open(ids[2])  # its model, llama3.2:3b, was deleted since
        await settle(pilot, lambda: pane.log_view.query(ChatNotice))
        notice = str(pane.log_view.query_one(ChatNotice).content)
        assert "used llama3.2:3b, which is not on this machine now" in notice
        assert f"the default model ({MODEL})" in notice
        assert pane.settings.model is None  # the default, offered
        await send(pilot, record, "still there?")
        assert manager.sent and store.conversation(ids[2]).model is None


async def test_new_rename_and_delete_which_asks_first(store: ChatStore) -> None:
    ids = three_chats(store)
    record = Recorder()
    async with dashboard(store).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        await settle(pilot, lambda: len(pane.sidebar.conversations) == 3)
        await pilot.press("ctrl+l")  # the list, on the most recent
        await pilot.press("r")
        await settle(pilot, lambda: isinstance(pilot.app.screen, RenameScreen))
        await pilot.press("ctrl+a", "ctrl+k", *"Towers of light", "enter")
        await settle(pilot, lambda: store.conversation(ids[2]).title == "Towers of light")
        await settle(pilot, lambda: sidebar_titles(pane)[0] == "Towers of light")
        # Delete asks; "n" keeps it.
        await pilot.press("x")
        await settle(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        question = str(pilot.app.screen.query_one(".question", Static).content)
        assert "Delete the conversation 'Towers of light'" in question
        await pilot.press("n")
        await settle(pilot, lambda: not isinstance(pilot.app.screen, ConfirmScreen))
        assert store.count_conversations() == 3
        await pilot.press("x")
        await settle(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("y")
        await settle(pilot, lambda: store.count_conversations() == 2)
        await settle(pilot, lambda: "Towers of light" not in sidebar_titles(pane))
        assert store.messages(ids[2]) == []
        # A new chat from the list ("n") or anywhere (ctrl+n).
        pane.open(ids[1])
        await settle(pilot, lambda: len(turns(pane)) == 2)
        await pilot.press("ctrl+n")
        await settle(pilot, lambda: not turns(pane) and pane.conversation is None)
        assert str(pane.log_view.border_title) == "New chat"
        await send(pilot, record, "A fresh start")
        assert store.count_conversations() == 3
        assert sidebar_titles(pane)[0] == "A fresh start"


async def test_search_opens_the_match(store: ChatStore) -> None:
    ids = three_chats(store)
    chat = store.create_conversation("Unrelated", now=5000.0)
    for i in range(30):
        store.add_message(chat.id, "user", f"filler {i}", now=5000.0 + i)
    target = store.add_message(chat.id, "assistant", "the word periwinkle is here", now=5100.0)
    for i in range(30):
        store.add_message(chat.id, "user", f"more filler {i}", now=5200.0 + i)
    async with dashboard(store).run_test(size=SIZE) as pilot:
        pane = await ready(pilot)
        await pilot.press("ctrl+f")
        assert pilot.app.query_one("#chat-search", Input).has_focus
        await pilot.press(*"soup")
        await settle(pilot, lambda: pane.sidebar.hits is not None and len(pane.sidebar.hits) == 1)
        assert pane.sidebar.hits is not None and pane.sidebar.hits[0].conversation.id == ids[0]
        await pilot.press(*" recipes")
        await settle(pilot, lambda: pane.sidebar.hits and pane.sidebar.hits[0].message_id is None)
        await pilot.press("ctrl+a", "ctrl+k", *"periwink")
        await settle(
            pilot, lambda: pane.sidebar.hits and pane.sidebar.hits[0].message_id == target.id
        )
        shown = str(pane.sidebar.option_list.get_option_at_index(0).prompt)
        assert "Unrelated" in shown and "periwinkle" in shown
        await pilot.press("enter")  # to the matches
        assert pane.sidebar.option_list.has_focus
        await pilot.press("enter")  # open it, at the match
        log = pane.log_view
        await settle(pilot, lambda: log.cursor_message is not None)
        assert log.cursor_message is not None and log.cursor_message.message_id == target.id
        assert log.has_focus
        # Esc in the search box leaves the search: the list is back.
        await pilot.press("ctrl+f", "escape")
        await settle(pilot, lambda: not pane.sidebar.searching)
        assert sidebar_titles(pane)[0] == "Unrelated"


async def test_the_list_loads_page_after_page(store: ChatStore) -> None:
    for i in range(130):
        store.create_conversation(f"chat {i:03d}", now=float(i))
    async with dashboard(store).run_test(size=SIZE) as pilot:
        pane = await ready(pilot)
        await settle(pilot, lambda: len(pane.sidebar.conversations) == 50)
        await pilot.press("ctrl+l", "end")
        await settle(pilot, lambda: len(pane.sidebar.conversations) == 100)
        await pilot.press("end")
        await settle(pilot, lambda: len(pane.sidebar.conversations) == 130)
        assert sidebar_titles(pane)[-1] == "chat 000"


async def test_another_process_writing_is_noticed(store: ChatStore, tmp_path: Path) -> None:
    async with dashboard(store).run_test(size=SIZE) as pilot:
        pane = await ready(pilot)
        other = ChatStore(tmp_path / "chats.db")  # as a second shimmy would
        other.create_conversation("From the other window")
        other.close()
        await settle(pilot, lambda: sidebar_titles(pane) == ["From the other window"], timeout=10)


# -- messages ------------------------------------------------------------------------


async def test_edit_the_last_message_and_resend(store: ChatStore) -> None:
    manager = FakeManager()
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        await send(pilot, record, "Wrong question")
        await send(pilot, record, "Second question")
        await pilot.press("up")  # in the empty box: edit the last message
        await settle(pilot, lambda: pane.composer.text == "Second question")
        banner = pilot.app.query_one("#chat-editing", Static)
        assert banner.display and "Enter saves and asks again" in str(banner.content)
        await pilot.press("ctrl+a", "ctrl+k", *"Better question")
        before = len(record.finished)
        await pilot.press("enter")
        await settle(pilot, lambda: len(record.finished) > before)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert [t[1] for t in turns(pane)] == [
            "Wrong question",
            REPLY.strip(),
            "Better question",
            REPLY.strip(),
        ]
        assert manager.sent[-1][-1]["content"] == "Better question"
        (chat,) = store.conversations()
        assert [m.content.strip() for m in store.messages(chat.id)][2:] == [
            "Better question",
            REPLY.strip(),
        ]
        assert not banner.display and pane.composer.text == ""
        # Any message can be edited; one that is not the last is kept, not resent.
        sent = len(manager.sent)
        pane.log_view.focus()
        await pilot.press("home", "e")
        await settle(pilot, lambda: pane.composer.text == "Wrong question")
        assert "Enter saves ·" in str(banner.content)
        await pilot.press("ctrl+a", "ctrl+k", *"First question", "enter")
        await settle(pilot, lambda: store.messages(chat.id)[0].content == "First question")
        await settle(pilot, lambda: turns(pane)[0] == ("user", "First question"))
        assert len(manager.sent) == sent
        # Esc cancels an edit and gives back what the box held.
        await pilot.press(*"draft")
        pane.log_view.focus()
        await pilot.press("home", "e")
        await settle(pilot, lambda: pane.composer.text == "First question")
        await pilot.press("escape")
        await settle(pilot, lambda: pane.composer.text == "draft")


async def test_delete_a_message_and_regenerate(store: ChatStore) -> None:
    manager = FakeManager()
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        await send(pilot, record, "One")
        await send(pilot, record, "Two")
        (chat,) = store.conversations()
        pane.log_view.focus()
        await pilot.press("home", "x")  # the first message
        await settle(pilot, lambda: len(store.messages(chat.id)) == 3)
        assert [t[1] for t in turns(pane)][0] == REPLY.strip()
        # ctrl+r asks again for the last reply, which is replaced.
        before = len(record.finished)
        await pilot.press("ctrl+r")
        await settle(pilot, lambda: len(record.finished) > before)
        await pilot.app.workers.wait_for_complete()
        assert len(store.messages(chat.id)) == 3
        assert [m.role for m in store.messages(chat.id)] == ["assistant", "user", "assistant"]
        assert manager.sent[-1][-1]["content"] == "Two"


async def test_copy_the_message_or_the_code_block_under_the_cursor(store: ChatStore) -> None:
    ids = three_chats(store)
    async with dashboard(store).run_test(size=SIZE) as pilot:
        pane = await ready(pilot)
        pane.open(ids[0])
        await settle(pilot, lambda: len(turns(pane)) == 2)
        await pilot.pause()
        log = pilot.app.query_one(ChatLog)
        log.focus()
        await pilot.press("home", "c")  # the question
        assert pilot.app.clipboard == "question about old soup recipes"
        await pilot.press("down", "c")  # the reply
        assert pilot.app.clipboard == "answer 0\n\n```\ncode 0\n```"
        await pilot.press("down", "c")  # its code block
        assert pilot.app.clipboard.strip() == "code 0"
        pane.composer.focus()
        pane.action_copy_last_reply()
        assert pilot.app.clipboard.startswith("answer 0")


async def test_chat_actions_are_in_the_palette_and_the_help(store: ChatStore) -> None:
    async with dashboard(store).run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p")
        await settle(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
        await pilot.press(*"chat")
        commands = pilot.app.screen.query_one(CommandList)
        await settle(pilot, lambda: commands.option_count > 5)
        titles = {
            str(commands.get_option_at_index(i).prompt).split("\n")[0]
            for i in range(commands.option_count)
        }
        wanted = {
            "New chat (every chat is kept)",
            "Search every chat's title and messages",
            "Rename chat",
            "Delete chat",
            "Go to the chat list: Enter opens a chat",
        }
        assert wanted <= titles, titles
        await pilot.press("escape")
        await pilot.press("f1")
        await settle(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        console = Console(width=200, record=True, file=io.StringIO())
        for static in pilot.app.screen.query(Static):
            console.print(static.content)
        text = console.export_text()
        for key in ("ctrl+j", "ctrl+f", "ctrl+l", "↑", "Copy", "Rename", "Delete"):
            assert key in text, key


# -- the context ----------------------------------------------------------------------


async def test_the_stop_policy_says_so_and_sends_nothing(store: ChatStore) -> None:
    manager = FakeManager()
    manager.context_tokens = 80  # a word a token: two turns and a reply fill it
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        pilot.app.query_one("#context-policy", Select).value = STOP
        app_field(pilot, "#max-tokens").value = "20"
        await send(pilot, record, "first")
        await send(pilot, record, "second")
        sent = len(manager.sent)
        finished = await send(pilot, record, "third")
        assert finished.finish_reason == "refused" and len(manager.sent) == sent
        problem = pane.log_view.query(ChatMessage).last().query_one(".problem", Static)
        assert "conversation is full" in str(problem.content)
        # The refused turn is kept, marked, and never sent again.
        (chat,) = store.conversations()
        assert store.messages(chat.id)[-1].error is not None
        pilot.app.query_one("#context-policy", Select).value = "drop_oldest"
        await send(pilot, record, "fourth")
        assert manager.sent[-1][-1]["content"] == "fourth"
        assert all(m["content"] != "third" for m in manager.sent[-1])


async def test_a_too_long_message_does_not_jam_the_chat(store: ChatStore) -> None:
    manager = FakeManager()
    manager.context_tokens = 60  # a word a token
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        long = " ".join(f"word{i}" for i in range(80))
        finished = await send(pilot, record, long)
        assert finished.finish_reason == "refused" and manager.sent == []
        problem = pane.log_view.query(ChatMessage).last().query_one(".problem", Static)
        assert "too long for the model's context" in str(problem.content)
        assert "83 tokens; the context holds 60" in str(problem.content)
        # The next, short message is answered, without the refused one.
        finished = await send(pilot, record, "a short one")
        assert finished.finish_reason == "stop"
        assert manager.sent == [[{"role": "user", "content": "a short one"}]]
        assert turns(pane)[-1] == ("assistant", REPLY.strip())
        (chat,) = store.conversations()
        kept = store.messages(chat.id)
        assert [m.role for m in kept] == ["user", "user", "assistant"]
        assert kept[0].error is not None and kept[1].error is None


async def test_a_conversation_longer_than_the_context_keeps_going(store: ChatStore) -> None:
    manager = FakeManager()
    manager.context_tokens = 200  # a word a token: three turns fill it
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        await settle(pilot, lambda: pane.settings.model_names)
        pilot.app.query_one("#system-prompt", TextArea).text = "Be brief."
        app_field(pilot, "#max-tokens").value = "40"
        for i in range(8):
            finished = await send(pilot, record, f"question {i}")
            assert finished.finish_reason == "stop", i
        # Every message was answered; the later ones left out the oldest turns,
        # kept the system prompt, and said so.
        last = manager.sent[-1]
        assert last[0] == {"role": "system", "content": "Be brief."}
        assert last[-1] == {"role": "user", "content": "question 7"}
        assert {"role": "user", "content": "question 0"} not in last
        assert sum(3 + len(m["content"].split()) for m in last) + 40 <= 200
        note = pane.log_view.query(ChatMessage).last().query_one(".note", Static)
        assert note.display and "oldest turns left out to fit the context" in str(note.content)
        (chat,) = store.conversations()
        assert store.messages(chat.id)[-1].note == str(note.content)


@dataclass
class HeldReply:
    """A long reply that writes its first words, then waits for ``release``."""

    release: asyncio.Event
    first: str = "The first words of a long reply"
    model: str = MODEL
    written: str = ""
    done: bool = False
    finish_reason: str | None = None
    completion_tokens: int = 0
    tokens_per_second: float | None = None
    time_to_first_token: float | None = None

    async def stream(self) -> AsyncIterator[Piece]:
        for word in self.first.split(" "):
            self.written += word + " "
            self.completion_tokens += 1
            yield Piece(word + " ", 1)
        await self.release.wait()
        if self.done:  # cancelled
            return
        self.written += "and its end."
        yield Piece("and its end.", 1)
        self.finish_reason, self.done = "stop", True

    @property
    def output(self) -> str:
        return self.written

    def cancel(self) -> None:
        self.finish_reason, self.done = "cancelled", True
        self.release.set()


class HeldManager(FakeManager):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    def submit_chat(self, name: str | None, messages: Any, **kwargs: Any) -> HeldReply:  # type: ignore[override]
        self.sent.append(list(messages))
        return HeldReply(self.release)


async def test_a_reply_is_saved_while_it_streams(store: ChatStore) -> None:
    manager = HeldManager()
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        await ready(pilot)
        await pilot.press(*"Tell me a long story", "enter")

        def stored_reply() -> str:
            chats = store.conversations()
            messages = store.messages(chats[0].id) if chats else []
            return messages[-1].content if len(messages) == 2 else ""

        # Written while the reply waits for its next token: within a second or so.
        started = time.monotonic()
        await settle(pilot, lambda: stored_reply().strip() == "The first words of a long reply")
        assert time.monotonic() - started < 1.0 + 1.5  # SAVE_INTERVAL, and this machine
        assert not record.finished
        manager.release.set()
        await settle(pilot, lambda: record.finished)
        await pilot.app.workers.wait_for_complete()
        (chat,) = store.conversations()
        reply = store.messages(chat.id)[-1]
        assert reply.content.endswith("and its end.") and reply.finish_reason == "stop"


async def test_a_stopped_reply_keeps_what_it_wrote(store: ChatStore) -> None:
    manager = HeldManager()
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        await pilot.press(*"Tell me a long story", "enter")
        await settle(pilot, lambda: pane.live_tokens() >= 7)
        await pilot.press("escape")
        await settle(pilot, lambda: record.finished)
        await pilot.app.workers.wait_for_complete()
        (chat,) = store.conversations()
        reply = store.messages(chat.id)[-1]
        assert reply.content.startswith("The first words of a long reply")
        assert reply.finish_reason == "cancelled"


# -- what lasts -----------------------------------------------------------------------


async def type_into(pilot: Pilot[Any], selector: str, text: str) -> None:
    pilot.app.query_one(selector).focus()
    await pilot.press("ctrl+a", "ctrl+k", *text)


async def test_what_the_user_chose_is_kept_across_restarts(store: ChatStore) -> None:
    record = Recorder()
    app = dashboard(store)
    async with app.run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        await pilot.press("ctrl+t")  # the light theme
        await type_into(pilot, "#temperature", "0.3")
        pilot.app.query_one("#system-prompt", TextArea).text = "Be kind."
        pilot.app.query_one("#chat-model", Select).value = "llama3.2:3b"
        pane.composer.focus()
        await send(pilot, record, "Remember me")
        await pilot.press("ctrl+q")
    assert app.return_code == 0

    # The next run: the theme, and the conversation left open with its settings.
    app = dashboard(store)
    async with app.run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        assert app.theme == LIGHT_THEME
        await settle(pilot, lambda: pane.conversation is not None, what="the last chat")
        assert pane.conversation is not None and pane.conversation.title == "Remember me"
        await settle(pilot, lambda: len(turns(pane)) == 2)
        assert app_field(pilot, "#temperature").value == "0.3"
        assert pane.settings.system_prompt == "Be kind."
        assert pane.settings.model == "llama3.2:3b"
        # A new chat, and settings changed just before quitting (saved on the way out).
        await pilot.press("ctrl+n")
        await settle(pilot, lambda: pane.conversation is None)
        await type_into(pilot, "#max-tokens", "77")
        await pilot.press("ctrl+q")

    # The run after: no chat was open, so a new one, with the settings as left.
    app = dashboard(store)
    async with app.run_test(size=SIZE) as pilot:
        pane = await ready(pilot)
        await settle(pilot, lambda: app_field(pilot, "#max-tokens").value == "77")
        assert pane.conversation is None and not turns(pane)
        assert app_field(pilot, "#temperature").value == "0.3"
        assert pane.settings.model == "llama3.2:3b"
        assert pane.settings.system_prompt == "Be kind."


async def test_a_message_typed_right_after_ctrl_n_starts_the_new_chat(store: ChatStore) -> None:
    record = Recorder()
    async with dashboard(store).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        await send(pilot, record, "first")
        before = len(record.finished)
        # As fast typing delivers them: Enter handled before anything ctrl+n started ran.
        pane.action_new_chat()
        assert pane.send("second")
        await settle(pilot, lambda: len(record.finished) > before)
        await pilot.app.workers.wait_for_complete()
        newest, older = store.conversations()
        assert [m.content for m in store.messages(older.id)][0] == "first"
        assert [m.content for m in store.messages(newest.id)][0] == "second"
        assert len(store.messages(older.id)) == 2
        assert pane.conversation is not None and pane.conversation.id == newest.id
        assert store.preference("chat.last_conversation") == newest.id


class FailingOnceManager(FakeManager):
    """The model fails the first request (out of memory, say), then answers."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def submit_chat(self, name: str | None, messages: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            self.sent.append(list(messages))
            raise ShimmyError("generation_failed", "the model ran out of memory")
        return super().submit_chat(name, messages, **kwargs)


async def test_a_failed_reply_is_not_resent_and_ctrl_r_retries_it(store: ChatStore) -> None:
    manager = FailingOnceManager()
    record = Recorder()
    async with dashboard(store, manager).run_test(size=SIZE, message_hook=record) as pilot:
        pane = await ready(pilot)
        finished = await send(pilot, record, "first try")
        assert finished.finish_reason == "error"
        problem = pane.log_view.query(ChatMessage).last().query_one(".problem", Static)
        assert "ran out of memory" in str(problem.content)
        # The next message goes without the failed turn.
        await send(pilot, record, "something else")
        assert manager.sent[-1] == [{"role": "user", "content": "something else"}]
        # A reply that fails last is tried again by ctrl+r (still without the first).
        manager.failures = 1
        assert (await send(pilot, record, "third")).finish_reason == "error"
        before = len(record.finished)
        await pilot.press("ctrl+r")
        await settle(pilot, lambda: len(record.finished) > before)
        await pilot.app.workers.wait_for_complete()
        assert record.finished[-1].finish_reason == "stop"
        assert [m["content"].strip() for m in manager.sent[-1]] == [
            "something else",
            REPLY.strip(),
            "third",
        ]
        (chat,) = store.conversations()
        kept = [(m.role, m.error is not None) for m in store.messages(chat.id)]
        assert kept == [
            ("user", False),
            ("assistant", True),
            ("user", False),
            ("assistant", False),
            ("user", False),
            ("assistant", False),
        ]
