"""Opening the chats database whatever state it is in (where it is:
:func:`shimmy.config.chats_path`).

The dashboard must open even when the database cannot be used: a damaged file,
or one from a newer shimmy, is renamed aside (never deleted; its ``-wal`` and
``-shm`` files go with it) and a fresh one started, and the dashboard says so.
The ``shimmy chats`` commands only read or change what is there, and report
such a file as an error instead (:func:`open_existing`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from shimmy.chats.schema import NewerDatabase
from shimmy.chats.store import ChatStore
from shimmy.errors import ShimmyError

_COMPANIONS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class OpenedStore:
    """A usable store, and what happened to the file if it could not be used as is."""

    store: ChatStore
    problem: str | None = None  # a sentence for the user
    set_aside: Path | None = None  # where the unusable file now is


def open_store(path: Path) -> OpenedStore:
    """The store at ``path``, created when missing. A file that is not a usable
    database is set aside and a fresh one started; when even that fails (a folder
    that cannot be written), the chats live in memory for this run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return OpenedStore(ChatStore(path))
    except NewerDatabase as exc:
        why = f"it was written by a newer shimmy ({exc})"
        kind = "newer"
    except sqlite3.DatabaseError as exc:
        if _unwritable(exc):
            return _in_memory(path, exc)
        why = f"it is damaged ({exc})"
        kind = "damaged"
    except OSError as exc:
        return _in_memory(path, exc)
    try:
        aside = set_aside(path, kind)
        store = ChatStore(path)
    except (OSError, sqlite3.Error, NewerDatabase) as exc:
        return _in_memory(path, exc)
    problem = f"The chats database {path} could not be used: {why}. It was kept as {aside}"
    return OpenedStore(store, problem + "; a new one was started.", aside)


def open_existing(path: Path) -> ChatStore | None:
    """The store at ``path`` for a command (None when there is no database yet);
    an unusable file is an error and stays as it is."""
    if not path.exists():
        return None
    try:
        return ChatStore(path)
    except NewerDatabase as exc:
        raise ShimmyError(
            "invalid_request", f"The chats database {path} is from a newer shimmy", str(exc)
        ) from exc
    except sqlite3.DatabaseError as exc:
        raise ShimmyError(
            "server_error",
            f"The chats database {path} cannot be read",
            f"{exc}; the dashboard keeps such a file aside and starts a new one",
        ) from exc


def set_aside(path: Path, kind: str) -> Path:
    """Rename ``path`` (and its -wal/-shm files) to ``<name>.<kind>-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{kind}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{kind}-{stamp}-{n}")
    os.replace(path, target)
    for suffix in _COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, target.with_name(target.name + suffix))
    return target


def _unwritable(exc: sqlite3.DatabaseError) -> bool:
    """A database that cannot be opened or written (permissions, a full disk),
    rather than one whose content is damaged: nothing to set aside."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        words in str(exc)
        for words in ("unable to open", "readonly", "read-only", "disk is full", "locked")
    )


def _in_memory(path: Path, exc: BaseException) -> OpenedStore:
    problem = f"Chats are not saved this time: {path} cannot be opened ({exc})."
    return OpenedStore(ChatStore(":memory:"), problem)
