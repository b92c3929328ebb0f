"""`shimmy chats list|show|export|rm`, the installed command over a real chats
database in an isolated home (the dashboard's own end-to-end tests write one
through the Chat tab: tests/tui/test_chats_e2e.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shimmy.chats import ChatStore
from tests.e2e.harness import isolated_env, run_shimmy

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


def two_chats(path: Path) -> tuple[int, int]:
    store = ChatStore(path)
    settings = {"temperature": 0.3, "max_tokens": 100, "context_policy": "drop_oldest"}
    old = store.create_conversation(
        "Lighthouses", model="smollm2", system_prompt="Be brief.", settings=settings, now=1e9
    )
    store.add_message(old.id, "user", "What is a lighthouse?", now=1e9 + 1)
    reply = store.add_message(old.id, "assistant", "A tower with a light.", model="smollm2")
    store.update_message(reply.id, tokens=6, tokens_per_second=80.0, finish_reason="stop")
    new = store.create_conversation("Sorting [/bold] lists", settings=settings)
    store.add_message(new.id, "user", "How do I sort?")
    store.close()
    return old.id, new.id


def test_list_show_export_and_rm(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "shimmy" / "data" / "chats.db"
    empty = run_shimmy(["chats", "list", "--json"], env, cwd=tmp_path)
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    assert not db.exists()  # reading creates nothing
    db.parent.mkdir(parents=True)
    old, new = two_chats(db)

    listed = run_shimmy(["chats", "list", "--json"], env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["title"], r["message_count"]) for r in rows] == [
        (new, "Sorting [/bold] lists", 1),
        (old, "Lighthouses", 2),
    ]
    assert rows[1]["model"] == "smollm2" and rows[1]["system_prompt"] == "Be brief."
    assert rows[1]["created_at"] == "2001-09-09T01:46:40+00:00"
    table = run_shimmy(["chats", "list"], env, cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == ["ID", "UPDATED", "MODEL", "MESSAGES", "TITLE"]
    assert table[2].startswith(str(old)) and table[2].endswith("Lighthouses")

    shown = run_shimmy(["chats", "show", str(old)], env, cwd=tmp_path)
    assert shown.returncode == 0
    assert re.search(r"^title +Lighthouses$", shown.stdout, re.M)
    assert re.search(r"^system prompt +Be brief\.$", shown.stdout, re.M)
    assert "What is a lighthouse?" in shown.stdout and "A tower with a light." in shown.stdout
    assert "[smollm2 · 6 tokens · 80.0 tok/s · stop]" in shown.stdout

    markdown = run_shimmy(["chats", "export", str(old)], env, cwd=tmp_path)
    assert markdown.returncode == 0
    assert markdown.stdout.startswith("# Lighthouses\n")
    assert "- Model: smollm2" in markdown.stdout
    assert "temperature 0.3 · max tokens 100" in markdown.stdout
    assert "## You\n\nWhat is a lighthouse?" in markdown.stdout
    exported = json.loads(
        run_shimmy(["chats", "export", str(old), "--format", "json"], env, cwd=tmp_path).stdout
    )
    assert [m["content"] for m in exported["messages"]] == [
        "What is a lighthouse?",
        "A tower with a light.",
    ]

    refused = run_shimmy(["chats", "rm", str(old)], env, cwd=tmp_path, input="")
    assert refused.returncode == 2 and "without --yes" in refused.stderr
    removed = run_shimmy(["chats", "rm", str(old), "--yes"], env, cwd=tmp_path)
    assert removed.returncode == 0 and f"deleted conversation {old}" in removed.stdout
    gone = run_shimmy(["chats", "show", str(old)], env, cwd=tmp_path)
    assert gone.returncode == 2 and f"There is no conversation {old}" in gone.stderr
    rows = json.loads(run_shimmy(["chats", "list", "--json"], env, cwd=tmp_path).stdout)
    assert [r["id"] for r in rows] == [new]


def test_the_database_moves_with_the_setting(env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    two_chats(elsewhere)
    moved = {**env, "SHIMMY_CHATS_DB": str(elsewhere)}
    rows = json.loads(run_shimmy(["chats", "list", "--json"], moved, cwd=tmp_path).stdout)
    assert len(rows) == 2
    diag = json.loads(run_shimmy(["diag", "--json"], moved, cwd=tmp_path).stdout)
    assert diag["paths"]["chats_db"] == str(elsewhere)


def test_a_damaged_database_is_reported_and_left_alone(env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "shimmy" / "data" / "chats.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"garbage " * 1000)
    result = run_shimmy(["chats", "list"], env, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot be read" in result.stderr and "Traceback" not in result.stderr
    assert db.read_bytes() == b"garbage " * 1000
