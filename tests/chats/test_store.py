"""The chats store against a real SQLite file: conversations, messages, pages,
full-text search, preferences."""

from __future__ import annotations

from pathlib import Path

import pytest

from shimmy.chats import MATCH_END, MATCH_START, ChatStore, title_from
from shimmy.chats.store import fts_query
from shimmy.errors import ShimmyError


@pytest.fixture
def store(tmp_path: Path):
    store = ChatStore(tmp_path / "chats.db")
    yield store
    store.close()


def test_a_conversation_and_its_messages_round_trip(store: ChatStore) -> None:
    settings = {"temperature": 0.2, "max_tokens": 64, "context_policy": "stop"}
    chat = store.create_conversation(
        "Sorting", model="smollm2", system_prompt="Be brief.", settings=settings, now=100.0
    )
    assert (chat.title, chat.model, chat.system_prompt, chat.settings) == (
        "Sorting",
        "smollm2",
        "Be brief.",
        settings,
    )
    ask = store.add_message(chat.id, "user", "How do I sort a list?", now=101.0)
    reply = store.add_message(chat.id, "assistant", "", model="smollm2", now=102.0)
    assert reply.finish_reason is None  # being written
    store.update_message(reply.id, content="Use sorted().")
    store.update_message(
        reply.id,
        tokens=4,
        tokens_per_second=80.5,
        time_to_first_token=0.05,
        finish_reason="stop",
        note="a note",
    )
    messages = store.messages(chat.id)
    assert [m.id for m in messages] == [ask.id, reply.id]
    stored = messages[1]
    assert (stored.content, stored.model, stored.tokens, stored.finish_reason) == (
        "Use sorted().",
        "smollm2",
        4,
        "stop",
    )
    assert (stored.tokens_per_second, stored.time_to_first_token, stored.note) == (
        80.5,
        0.05,
        "a note",
    )
    # A new message makes the conversation the most recently updated.
    assert store.conversation(chat.id).updated_at == 102.0


def test_pages_are_most_recent_first(store: ChatStore) -> None:
    made = [store.create_conversation(f"chat {i}", now=1000.0 + i) for i in range(7)]
    store.add_message(made[2].id, "user", "back to this one", now=2000.0)
    first = store.conversations(limit=3)
    assert [c.title for c in first] == ["chat 2", "chat 6", "chat 5"]
    second = store.conversations(limit=3, after=first[-1])
    third = store.conversations(limit=3, after=second[-1])
    assert [c.title for c in second + third] == ["chat 4", "chat 3", "chat 1", "chat 0"]
    assert store.count_conversations() == 7
    assert store.message_counts([made[2].id, made[0].id]) == {made[2].id: 1, made[0].id: 0}


def test_rename_delete_and_missing_ones(store: ChatStore) -> None:
    chat = store.create_conversation("old title")
    store.add_message(chat.id, "user", "hello")
    renamed = store.update_conversation(chat.id, title="new title")
    assert renamed.title == "new title"
    store.delete_conversation(chat.id)
    assert store.messages(chat.id) == []  # its messages went with it
    with pytest.raises(ShimmyError, match="There is no conversation"):
        store.conversation(chat.id)
    with pytest.raises(ShimmyError):
        store.delete_conversation(chat.id)
    assert store.search("hello") == []


def test_edit_and_delete_messages(store: ChatStore) -> None:
    chat = store.create_conversation("c")
    ids = [store.add_message(chat.id, r, t).id for r, t in [("user", "a"), ("assistant", "b")]]
    ids += [store.add_message(chat.id, r, t).id for r, t in [("user", "c"), ("assistant", "d")]]
    store.update_message(ids[0], content="a edited")
    store.delete_message(ids[1])
    assert [m.content for m in store.messages(chat.id)] == ["a edited", "c", "d"]
    store.delete_messages_from(chat.id, ids[2])
    assert [m.content for m in store.messages(chat.id)] == ["a edited"]
    assert store.search("edited")[0].message_id == ids[0]
    assert store.search("d") == []


def test_search_finds_titles_and_messages_and_marks_the_words(store: ChatStore) -> None:
    recipes = store.create_conversation("Pancake recipes", now=1.0)
    store.add_message(recipes.id, "user", "How much flour for pancakes?", now=2.0)
    code = store.create_conversation("Code", now=3.0)
    store.add_message(code.id, "user", "Write quicksort\nin Python", now=4.0)
    store.add_message(code.id, "assistant", "def quicksort(items): ...", now=5.0)
    hits = store.search("pancake")
    assert [h.conversation.id for h in hits] == [recipes.id]
    assert hits[0].message_id is None  # the title matched
    assert hits[0].snippet == f"{MATCH_START}Pancake{MATCH_END} recipes"
    # A prefix matches while the word is being typed; the newest message is shown.
    hits = store.search("quicks")
    assert [h.conversation.id for h in hits] == [code.id]
    assert hits[0].message_id == store.messages(code.id)[1].id
    assert f"{MATCH_START}quicksort{MATCH_END}" in hits[0].snippet
    # Every word must appear; accents and case do not matter; snippets are one line.
    assert store.search("python quicksort")[0].snippet.count("\n") == 0
    assert store.search("PYTHON flour") == []
    store.add_message(recipes.id, "assistant", "Add crème fraîche.", now=6.0)
    assert [h.conversation.id for h in store.search("creme")] == [recipes.id]


@pytest.mark.parametrize(
    "text",
    ['"', "a OR b", "NEAR(a b)", "-x", "col:value", "*", "a AND", "'; DROP TABLE messages; --"],
)
def test_search_takes_any_text_as_words(store: ChatStore, text: str) -> None:
    chat = store.create_conversation("c")
    store.add_message(chat.id, "user", "a b x value messages drop table")
    store.search(text)  # never an FTS5 syntax error
    assert store.messages(chat.id)


def test_fts_query_quotes_every_word() -> None:
    assert fts_query("") is None and fts_query('"*"') is None
    assert fts_query('say "hi" NOT-there') == '"say" "hi" "NOT" "there"*'


def test_titles_come_from_the_first_line() -> None:
    assert title_from("\n  How do I   sort?\nmore") == "How do I sort?"
    assert title_from("   ") == "New chat"
    long = title_from("word " * 40)
    assert len(long) == 60 and long.endswith("…")


def test_preferences_are_json_and_last(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.db")
    store.set_preference("theme", "textual-light")
    store.set_preference("chat", {"temperature": 0.3})
    store.set_preference("theme", "textual-dark")
    store.close()
    again = ChatStore(tmp_path / "chats.db")
    assert again.preference("theme") == "textual-dark"
    assert again.preference("chat") == {"temperature": 0.3}
    assert again.preference("missing", 5) == 5
    again.close()


def test_another_connections_writes_are_noticed(tmp_path: Path) -> None:
    mine, theirs = ChatStore(tmp_path / "chats.db"), ChatStore(tmp_path / "chats.db")
    assert not mine.changed_elsewhere()
    mine.create_conversation("mine")
    assert not mine.changed_elsewhere()  # its own writes are not news
    theirs.create_conversation("theirs")
    assert mine.changed_elsewhere()
    assert not mine.changed_elsewhere()
    mine.close()
    theirs.close()
