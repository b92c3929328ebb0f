"""The chats database's schema, one migration per version.

The database's ``PRAGMA user_version`` is the number of migrations applied. A
shimmy that finds a smaller number applies the rest, in one transaction each
(``migrate``); one that finds a larger number (a newer shimmy wrote it) leaves it
alone and says so (:class:`NewerDatabase`). A migration, once released, never
changes: a new version appends one.

Times are seconds since the epoch (UTC). A reply's ``finish_reason`` stays NULL
while it is written: a reply cut off by a crash is recognisable by that.
"""

from __future__ import annotations

import sqlite3

# Version 1: conversations, their messages, and what the dashboard remembers.
_CORE = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    model TEXT,                               -- NULL: the default model
    system_prompt TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',      -- JSON: sampling and context settings
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX conversations_by_update ON conversations (updated_at DESC, id DESC);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    model TEXT,                               -- replies: the model that wrote it
    tokens INTEGER,
    tokens_per_second REAL,
    time_to_first_token REAL,                 -- seconds
    finish_reason TEXT,                       -- NULL while the reply is written
    error TEXT,                               -- why this turn failed (it is not sent again)
    note TEXT                                 -- what the chat said about it (turns left out)
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);

CREATE TABLE preferences (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL                       -- JSON
);
"""

# Version 2: full-text search over every message and title (SQLite FTS5), kept in
# step by triggers; the rows already there are indexed by the migration.
_SEARCH = """
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    content, content = 'messages', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

CREATE VIRTUAL TABLE titles_fts USING fts5 (
    title, content = 'conversations', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'
);
CREATE TRIGGER titles_fts_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO titles_fts (rowid, title) VALUES (new.id, new.title);
END;
CREATE TRIGGER titles_fts_delete AFTER DELETE ON conversations BEGIN
    INSERT INTO titles_fts (titles_fts, rowid, title) VALUES ('delete', old.id, old.title);
END;
CREATE TRIGGER titles_fts_update AFTER UPDATE OF title ON conversations BEGIN
    INSERT INTO titles_fts (titles_fts, rowid, title) VALUES ('delete', old.id, old.title);
    INSERT INTO titles_fts (rowid, title) VALUES (new.id, new.title);
END;
INSERT INTO titles_fts (titles_fts) VALUES ('rebuild');
"""

MIGRATIONS: tuple[str, ...] = (_CORE, _SEARCH)
SCHEMA_VERSION = len(MIGRATIONS)


class NewerDatabase(Exception):
    """The database was written by a newer shimmy (its schema version is ahead)."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"schema version {found}, this shimmy knows up to version {SCHEMA_VERSION}"
        )
        self.found = found


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s database up to :data:`SCHEMA_VERSION`; returns the version
    it had. ``conn`` must be in autocommit mode (``isolation_level=None``).

    Each migration runs in an immediate transaction that reads the version again
    first, so two processes opening a new database at once apply each migration
    once."""
    before = schema_version(conn)
    if before > SCHEMA_VERSION:
        raise NewerDatabase(before)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = schema_version(conn)
            if version > SCHEMA_VERSION:
                raise NewerDatabase(version)
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return before
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """``script``'s statements one by one (``executescript`` would commit first)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
