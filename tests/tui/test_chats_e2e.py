"""The real `shimmy` dashboard in a terminal keeps its conversations: a message
sent in the Chat tab is in `shimmy chats list --json` and `shimmy chats export`
after quitting; and a dashboard killed with SIGKILL in the middle of a long reply
leaves the reply written so far in a database that checks out."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.harness import isolated_env, run_shimmy
from tests.real_model import SMOLLM2_NAME
from tests.tui.terminal import F3, free_port, quit_dashboard, read_screen, start_dashboard, stop
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

ROWS, COLUMNS = 36, 120
T = TypeVar("T")


def rows(db: Path, sql: str) -> list[Any]:
    """Read the dashboard's database from outside, as another program would."""
    if not db.exists():
        return []
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql).fetchall()


class Terminal:
    """The dashboard on its pty, read while a test waits (or it blocks drawing)."""

    def __init__(self, tmp_path: Path) -> None:
        self.env = isolated_env(tmp_path, TERM="xterm-256color", COLUMNS=str(COLUMNS))
        self.db = tmp_path / "shimmy" / "data" / "chats.db"
        self.process, self.primary, self.screen = start_dashboard(
            tmp_path, free_port(), self.env, ROWS, COLUMNS
        )

    def wait(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        def reading() -> T:
            assert self.process.poll() is None, self.tail()
            self.screen.extend(read_screen(self.primary, 0.05))
            return condition()

        return eventually(reading, timeout, interval=0, what=lambda: f"{what}: {self.tail()}")

    def tail(self) -> str:
        return self.screen[-2000:].decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.primary, text.encode())

    def open_chat(self) -> None:
        """F3, once the Chat tab's keys are in the footer."""
        drawn = len(self.screen)
        os.write(self.primary, F3)
        self.wait(lambda: b"Regenerate" in self.screen[drawn:], 30, "the Chat tab")


def test_a_message_sent_in_the_dashboard_is_kept(tmp_path: Path) -> None:
    term = Terminal(tmp_path)
    try:
        term.open_chat()
        term.type("Name three colours.\r")
        replies = "SELECT content, model, finish_reason FROM messages WHERE role = 'assistant'"
        ((content, model, finish),) = term.wait(
            lambda: [r for r in rows(term.db, replies) if r[2]], 180, "the reply's end"
        )
        assert content.strip() and model == SMOLLM2_NAME and finish in ("stop", "length")
        assert quit_dashboard(term.process, term.primary, term.screen) == 0
    finally:
        stop(term.process, term.primary)

    listed = run_shimmy(["chats", "list", "--json"], term.env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (chat,) = json.loads(listed.stdout)
    assert chat["title"] == "Name three colours." and chat["message_count"] == 2
    exported = run_shimmy(["chats", "export", str(chat["id"])], term.env, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    markdown = exported.stdout
    assert markdown.startswith("# Name three colours.\n")
    assert "## You\n\nName three colours." in markdown
    assert content.strip() in markdown and SMOLLM2_NAME in markdown


def test_sigkill_in_the_middle_of_a_reply_keeps_it(tmp_path: Path) -> None:
    term = Terminal(tmp_path)
    try:
        term.open_chat()
        term.type("Write a very long story about a dragon who learns to bake bread.\r")
        # Killed once the reply has been saved at least once while it streams.
        partial = "SELECT id, content FROM messages WHERE role = 'assistant' AND content != ''"
        writing = f"{partial} AND finish_reason IS NULL"
        term.wait(
            lambda: [r for r in rows(term.db, writing) if len(r[1].split()) >= 3],
            180,
            "a reply saved while it streams",
        )
        os.killpg(term.process.pid, signal.SIGKILL)
        assert term.process.wait(10) == -signal.SIGKILL
    finally:
        stop(term.process, term.primary)
    assert Path(f"{term.db}-wal").exists()  # killed with writes not yet checkpointed
    ((reply_id, content),) = rows(term.db, partial)
    assert len(content.split()) >= 3, repr(content)
    assert rows(term.db, f"SELECT finish_reason FROM messages WHERE id = {reply_id}") == [(None,)]
    assert rows(term.db, "PRAGMA integrity_check") == [("ok",)]
    # The next run reads it: the commands list it, and export shows the partial reply.
    listed = run_shimmy(["chats", "list", "--json"], term.env, cwd=tmp_path)
    (chat,) = json.loads(listed.stdout)
    exported = run_shimmy(["chats", "export", str(chat["id"])], term.env, cwd=tmp_path)
    assert exported.returncode == 0 and content.strip() in exported.stdout


def test_a_damaged_database_is_kept_aside_and_the_dashboard_opens(tmp_path: Path) -> None:
    db = tmp_path / "shimmy" / "data" / "chats.db"
    db.parent.mkdir(parents=True)
    damaged = b"not a database " * 1000
    db.write_bytes(damaged)
    term = Terminal(tmp_path)
    try:
        term.wait(lambda: b"could not be used" in term.screen, 30, "the dashboard saying so")
        term.open_chat()
        term.type("Still here?\r")
        replies = "SELECT content FROM messages WHERE role = 'assistant' AND finish_reason != ''"
        term.wait(lambda: rows(db, replies), 180, "the reply, in a new database")
        assert quit_dashboard(term.process, term.primary, term.screen) == 0
    finally:
        stop(term.process, term.primary)
    (kept,) = [
        p
        for p in db.parent.iterdir()
        if p.name.startswith("chats.db.") and "wal" not in p.name and "shm" not in p.name
    ]
    assert kept.read_bytes() == damaged
