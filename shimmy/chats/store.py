"""Conversations and their messages in one SQLite database.

One :class:`ChatStore` per process holds one connection, shared by the threads
that call it (each call takes the store's lock). The database is in WAL mode
with a busy timeout, so several shimmy processes read and write it at once: a
reader never waits for a writer, and a writer waits its turn (up to
``BUSY_TIMEOUT`` seconds) instead of failing. Every write is one short immediate
transaction; ``synchronous=NORMAL`` keeps each commit off the disk's flush
while a killed process (even ``kill -9``) still loses nothing committed, and
the database is never left corrupt.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shimmy.chats.schema import migrate, schema_version
from shimmy.errors import ShimmyError

BUSY_TIMEOUT = 10.0  # seconds a write waits for another process's transaction
PAGE_SIZE = 50  # conversations per page of the list
TITLE_LENGTH = 60
# Around the matched words of a search snippet: control characters that typed text
# does not hold (a stray one would only misplace the highlight).
MATCH_START, MATCH_END = "\x02", "\x03"

SQLITE_HEADER = b"SQLite format 3\x00"

_UNSET: Any = object()


@dataclass(frozen=True)
class Conversation:
    """One conversation: its title, model (None: the default model), system prompt
    and settings (the dashboard's chat settings, as JSON)."""

    id: int
    title: str
    model: str | None
    system_prompt: str
    settings: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class StoredMessage:
    """One turn. A reply carries its figures; ``finish_reason`` None means it is
    being written, or was cut off by a crash."""

    id: int
    conversation_id: int
    role: str
    content: str
    created_at: float
    model: str | None = None
    tokens: int | None = None
    tokens_per_second: float | None = None
    time_to_first_token: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class SearchHit:
    """A conversation that matches a search: by its title (``message_id`` None) or
    by one of its messages, with a snippet of the match (the matched words between
    :data:`MATCH_START` and :data:`MATCH_END`)."""

    conversation: Conversation
    message_id: int | None
    snippet: str


def title_from(text: str) -> str:
    """A conversation's title made from its first message: its first line, cut."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split()) or "New chat"
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


def fts_query(text: str) -> str | None:
    """A user's search words as an FTS5 query: every word must appear, the last
    one as a prefix (so results come while a word is typed). Each word is quoted,
    so nothing a user types is FTS5 syntax. None when there are no words."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w]
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


class ChatStore:
    """The conversations of ``path`` (``":memory:"``: kept in memory only).

    Raises ``sqlite3.DatabaseError`` when the file is not a readable database, and
    :class:`~shimmy.chats.schema.NewerDatabase` when a newer shimmy wrote it
    (``open_store`` deals with both)."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock  # the time of a change (tests fix it)
        if str(path) != ":memory:":
            _check_header(Path(path))
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            migrate(self._conn)
            # Read every table once: a damaged file often opens, then fails here.
            for table in ("conversations", "messages", "preferences"):
                self._conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1)")
        except BaseException:
            self._conn.close()
            raise
        self._data_version = self._read_data_version()

    # -- plumbing ----------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction: it takes the write lock at once, so it waits
        (busy timeout) instead of failing half-way when another process writes."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cursor = self._conn.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return cursor.fetchall()

    def _read_data_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed_elsewhere(self) -> bool:
        """Whether another connection (another shimmy) wrote since the last call."""
        version = self._read_data_version()
        changed = version != self._data_version
        self._data_version = version
        return changed

    @property
    def version(self) -> int:
        with self._lock:
            return schema_version(self._conn)

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: "ok", or what is wrong."""
        rows = self._read("PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- conversations -----------------------------------------------------------

    def create_conversation(
        self,
        title: str,
        *,
        model: str | None = None,
        system_prompt: str = "",
        settings: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> Conversation:
        when = self.clock() if now is None else now
        blob = json.dumps(dict(settings or {}), sort_keys=True)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO conversations (title, model, system_prompt, settings, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (title, model, system_prompt, blob, when, when),
            )
            conversation_id = int(cursor.lastrowid or 0)
        return self.conversation(conversation_id)

    def conversation(self, conversation_id: int) -> Conversation:
        """The conversation with this id; ``invalid_request`` when there is none."""
        rows = self._read("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise no_such_conversation(conversation_id)
        return _conversation(rows[0])

    def conversations(
        self, limit: int = PAGE_SIZE, after: Conversation | None = None
    ) -> list[Conversation]:
        """A page of conversations, most recently updated first; ``after`` (the last
        of the previous page) gives the next page."""
        if after is None:
            rows = self._read(
                "SELECT * FROM conversations ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,)
            )
        else:
            rows = self._read(
                "SELECT * FROM conversations WHERE (updated_at, id) < (?, ?) "
                "ORDER BY updated_at DESC, id DESC LIMIT ?",
                (after.updated_at, after.id, limit),
            )
        return [_conversation(r) for r in rows]

    def count_conversations(self) -> int:
        return int(self._read("SELECT count(*) FROM conversations")[0][0])

    def message_counts(self, conversation_ids: list[int]) -> dict[int, int]:
        if not conversation_ids:
            return {}
        marks = ",".join("?" * len(conversation_ids))
        rows = self._read(
            f"SELECT conversation_id, count(*) FROM messages WHERE conversation_id IN ({marks}) "
            "GROUP BY conversation_id",
            tuple(conversation_ids),
        )
        counts = {int(r[0]): int(r[1]) for r in rows}
        return {i: counts.get(i, 0) for i in conversation_ids}

    def update_conversation(
        self,
        conversation_id: int,
        *,
        title: str = _UNSET,
        model: str | None = _UNSET,
        system_prompt: str = _UNSET,
        settings: Mapping[str, Any] = _UNSET,
        touch: bool = False,
    ) -> Conversation:
        """Change what is given; ``touch`` also makes it the most recently updated."""
        values: dict[str, Any] = {}
        if title is not _UNSET:
            values["title"] = title
        if model is not _UNSET:
            values["model"] = model
        if system_prompt is not _UNSET:
            values["system_prompt"] = system_prompt
        if settings is not _UNSET:
            values["settings"] = json.dumps(dict(settings), sort_keys=True)
        if touch:
            values["updated_at"] = self.clock()
        if values:
            assignments = ", ".join(f"{k} = ?" for k in values)
            with self._write() as conn:
                cursor = conn.execute(
                    f"UPDATE conversations SET {assignments} WHERE id = ?",
                    (*values.values(), conversation_id),
                )
                if cursor.rowcount == 0:
                    raise no_such_conversation(conversation_id)
        return self.conversation(conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete it and its messages; ``invalid_request`` when there is none."""
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            if cursor.rowcount == 0:
                raise no_such_conversation(conversation_id)

    # -- messages ----------------------------------------------------------------

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        rows = self._read(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        )
        return [_message(r) for r in rows]

    def message(self, message_id: int) -> StoredMessage:
        rows = self._read("SELECT * FROM messages WHERE id = ?", (message_id,))
        if not rows:
            raise ShimmyError("invalid_request", f"There is no message {message_id}")
        return _message(rows[0])

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        model: str | None = None,
        now: float | None = None,
    ) -> StoredMessage:
        """Append a turn (the conversation becomes the most recently updated)."""
        when = self.clock() if now is None else now
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, model) "
                "VALUES (?, ?, ?, ?, ?)",
                (conversation_id, role, content, when, model),
            )
            conn.execute(
                "UPDATE conversations SET updated_at = max(updated_at, ?) WHERE id = ?",
                (when, conversation_id),
            )
            message_id = int(cursor.lastrowid or 0)
        return self.message(message_id)

    def update_message(
        self,
        message_id: int,
        *,
        content: str = _UNSET,
        model: str | None = _UNSET,
        tokens: int | None = _UNSET,
        tokens_per_second: float | None = _UNSET,
        time_to_first_token: float | None = _UNSET,
        finish_reason: str | None = _UNSET,
        error: str | None = _UNSET,
        note: str | None = _UNSET,
    ) -> None:
        """Change what is given (a reply as it is written, its figures at the end)."""
        given = {
            "content": content,
            "model": model,
            "tokens": tokens,
            "tokens_per_second": tokens_per_second,
            "time_to_first_token": time_to_first_token,
            "finish_reason": finish_reason,
            "error": error,
            "note": note,
        }
        values = {k: v for k, v in given.items() if v is not _UNSET}
        if not values:
            return
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._write() as conn:
            conn.execute(
                f"UPDATE messages SET {assignments} WHERE id = ?", (*values.values(), message_id)
            )

    def delete_message(self, message_id: int) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Delete this message and every later one of its conversation."""
        with self._write() as conn:
            conn.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND id >= ?",
                (conversation_id, message_id),
            )

    # -- search ------------------------------------------------------------------

    def search(self, text: str, limit: int = PAGE_SIZE) -> list[SearchHit]:
        """Conversations whose title or messages hold every word of ``text`` (the
        last as a prefix): title matches first, then by their latest matching
        message, newest first; one hit per conversation."""
        query = fts_query(text)
        if query is None:
            return []
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for row in self._read(
            "SELECT c.*, highlight(titles_fts, 0, ?, ?) AS snippet FROM titles_fts "
            "JOIN conversations c ON c.id = titles_fts.rowid WHERE titles_fts MATCH ? "
            "ORDER BY c.updated_at DESC LIMIT ?",
            (MATCH_START, MATCH_END, query, limit),
        ):
            seen.add(int(row["id"]))
            hits.append(SearchHit(_conversation(row), None, _clean_snippet(row["snippet"])))
        # Messages newest first (FTS5 walks its index backwards and stops at the
        # limit), several per conversation at most: a few times the page suffices.
        for row in self._read(
            "SELECT m.id AS message_id, c.*, "
            "snippet(messages_fts, 0, ?, ?, '…', 10) AS snippet FROM messages_fts "
            "JOIN messages m ON m.id = messages_fts.rowid "
            "JOIN conversations c ON c.id = m.conversation_id "
            "WHERE messages_fts MATCH ? ORDER BY messages_fts.rowid DESC LIMIT ?",
            (MATCH_START, MATCH_END, query, limit * 4),
        ):
            if len(hits) >= limit:
                break
            conversation_id = int(row["id"])
            if conversation_id in seen:
                continue
            seen.add(conversation_id)
            hits.append(
                SearchHit(
                    _conversation(row), int(row["message_id"]), _clean_snippet(row["snippet"])
                )
            )
        return hits

    # -- preferences -------------------------------------------------------------

    def preference(self, key: str, default: Any = None) -> Any:
        """What was remembered under ``key`` (JSON), or ``default``."""
        rows = self._read("SELECT value FROM preferences WHERE key = ?", (key,))
        if not rows:
            return default
        try:
            return json.loads(rows[0][0])
        except ValueError:
            return default

    def set_preference(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO preferences (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )


def _check_header(path: Path) -> None:
    """Refuse a file that is not an SQLite database before SQLite opens it: closing
    a connection to one deletes its -wal file, which must be kept with it."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    if head and head != SQLITE_HEADER:
        raise sqlite3.DatabaseError("file is not a database")


def no_such_conversation(conversation_id: int) -> ShimmyError:
    return ShimmyError(
        "invalid_request",
        f"There is no conversation {conversation_id}",
        "`shimmy chats list` shows them",
    )


def _conversation(row: sqlite3.Row) -> Conversation:
    try:
        settings = json.loads(row["settings"])
    except ValueError:
        settings = {}
    return Conversation(
        id=int(row["id"]),
        title=row["title"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        settings=settings if isinstance(settings, dict) else {},
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def _message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=int(row["id"]),
        conversation_id=int(row["conversation_id"]),
        role=row["role"],
        content=row["content"],
        created_at=float(row["created_at"]),
        model=row["model"],
        tokens=row["tokens"],
        tokens_per_second=row["tokens_per_second"],
        time_to_first_token=row["time_to_first_token"],
        finish_reason=row["finish_reason"],
        error=row["error"],
        note=row["note"],
    )


def _clean_snippet(snippet: str | None) -> str:
    """One line: newlines and other control characters as spaces, the match marks kept."""
    text = snippet or ""
    kept = "".join(c if c in (MATCH_START, MATCH_END) or c.isprintable() else " " for c in text)
    return " ".join(kept.split())
