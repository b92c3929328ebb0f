"""Opening a database that cannot be used as it is: a damaged file or one from a
newer shimmy is kept aside (never deleted) and a fresh one started; a folder that
cannot be written keeps the chats in memory. The commands report such a file
instead and leave it alone. And a database of the first schema is migrated."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from shimmy.chats import SCHEMA_VERSION, ChatStore, open_existing, open_store
from shimmy.chats.schema import MIGRATIONS, migrate
from shimmy.errors import ShimmyError

GARBAGE = b"this is not a database, " * 400


def test_a_new_database_is_created_with_the_whole_schema(tmp_path: Path) -> None:
    path = tmp_path / "data" / "chats.db"
    opened = open_store(path)
    assert opened.problem is None and opened.set_aside is None
    assert opened.store.version == SCHEMA_VERSION
    assert opened.store.integrity_check() == "ok"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    opened.store.close()


def test_a_damaged_database_is_kept_aside_and_a_new_one_started(tmp_path: Path) -> None:
    path = tmp_path / "chats.db"
    path.write_bytes(GARBAGE)
    (tmp_path / "chats.db-wal").write_bytes(b"wal bytes")
    opened = open_store(path)
    assert opened.set_aside is not None
    assert opened.set_aside.name.startswith("chats.db.damaged-")
    assert opened.set_aside.read_bytes() == GARBAGE  # kept, byte for byte
    assert Path(str(opened.set_aside) + "-wal").read_bytes() == b"wal bytes"
    assert opened.problem is not None
    assert "damaged" in opened.problem and str(opened.set_aside) in opened.problem
    chat = opened.store.create_conversation("fresh")
    assert opened.store.conversations() == [chat]
    opened.store.close()
    # The next start finds the fresh one, and the kept file is still there.
    again = open_store(path)
    assert again.problem is None and [c.title for c in again.store.conversations()] == ["fresh"]
    assert opened.set_aside.exists()
    again.store.close()


def test_a_database_damaged_inside_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "chats.db"
    store = ChatStore(path)
    chat = store.create_conversation("c")
    for i in range(200):
        store.add_message(chat.id, "user", f"message {i} " * 50)
    store.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the first page's schema, overwritten
    path.write_bytes(bytes(data))
    opened = open_store(path)
    assert opened.set_aside is not None and opened.problem is not None
    assert opened.store.conversations() == []
    opened.store.close()


def test_a_database_from_a_newer_shimmy_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "chats.db"
    ChatStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    opened = open_store(path)
    assert opened.set_aside is not None and opened.set_aside.name.startswith("chats.db.newer-")
    assert opened.problem is not None and "newer shimmy" in opened.problem
    with sqlite3.connect(opened.set_aside) as conn:  # untouched
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert opened.store.version == SCHEMA_VERSION
    opened.store.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only folders")
def test_a_folder_that_cannot_be_written_keeps_the_chats_in_memory(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        opened = open_store(folder / "chats.db")
        assert opened.problem is not None and "not saved" in opened.problem
        assert opened.set_aside is None
        opened.store.create_conversation("still works")
        assert len(opened.store.conversations()) == 1
        opened.store.close()
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("blocker", ["folder", "file"])
def test_a_path_that_cannot_hold_the_database_keeps_the_chats_in_memory(
    tmp_path: Path, blocker: str
) -> None:
    """chats_db names a folder, or a folder on its way is a file."""
    if blocker == "folder":
        path = tmp_path / "chats.db"
        path.mkdir()
    else:
        (tmp_path / "data").write_text("a file")
        path = tmp_path / "data" / "chats.db"
    opened = open_store(path)
    assert opened.problem is not None and "not saved" in opened.problem
    assert opened.set_aside is None
    opened.store.create_conversation("still works")
    assert len(opened.store.conversations()) == 1
    opened.store.close()


def test_the_commands_report_a_damaged_file_and_leave_it(tmp_path: Path) -> None:
    path = tmp_path / "chats.db"
    assert open_existing(path) is None  # none yet: nothing is created
    assert not path.exists()
    path.write_bytes(GARBAGE)
    with pytest.raises(ShimmyError, match="cannot be read"):
        open_existing(path)
    assert path.read_bytes() == GARBAGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chats.db"]


def test_a_database_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    """A chats.db written by the first release (version 1: no search index) keeps
    every conversation and message, and its old messages become searchable."""
    path = tmp_path / "chats.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO conversations (id, title, model, system_prompt, settings, created_at, "
        "updated_at) VALUES (7, 'Old chat', 'smollm2', 'Be brief.', '{\"temperature\": 0.5}', "
        "10, 20)"
    )
    conn.execute(
        "INSERT INTO messages (conversation_id, role, content, created_at) "
        "VALUES (7, 'user', 'Tell me about lighthouses', 11)"
    )
    conn.execute(
        "INSERT INTO messages (conversation_id, role, content, created_at, model, tokens, "
        "finish_reason) VALUES (7, 'assistant', 'Lighthouses guide ships.', 12, 'smollm2', 5, "
        "'stop')"
    )
    conn.close()
    opened = open_store(path)
    store = opened.store
    assert opened.problem is None
    assert store.version == SCHEMA_VERSION
    chat = store.conversation(7)
    assert (chat.title, chat.model, chat.system_prompt, chat.settings) == (
        "Old chat",
        "smollm2",
        "Be brief.",
        {"temperature": 0.5},
    )
    assert [(m.role, m.content, m.tokens) for m in store.messages(7)] == [
        ("user", "Tell me about lighthouses", None),
        ("assistant", "Lighthouses guide ships.", 5),
    ]
    assert [h.conversation.id for h in store.search("lighthouse")] == [7]
    assert [h.conversation.id for h in store.search("old chat")] == [7]
    # New messages after the migration are indexed by its triggers.
    store.add_message(7, "user", "And windmills?")
    assert [h.conversation.id for h in store.search("windmills")] == [7]
    assert store.integrity_check() == "ok"
    store.close()


def test_migrating_twice_at_once_applies_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "chats.db"
    first = sqlite3.connect(path, isolation_level=None)
    second = sqlite3.connect(path, isolation_level=None)
    assert migrate(first) == 0
    assert migrate(second) == SCHEMA_VERSION  # already done: nothing applied again
    first.close()
    second.close()
