"""``shimmy chats``: the dashboard's saved conversations, from the command line.

``list [--json]``, ``show ID``, ``export ID [--format md|json]`` and
``rm ID [--yes]`` read and change the same database as the Chat tab, safely
while a dashboard has it open. A database that cannot be read is reported and
left as it is (the dashboard is what sets such a file aside).
"""

from __future__ import annotations

import argparse
import json
import sys

from shimmy.chats import ChatStore, Conversation, open_existing
from shimmy.chats.export import (
    conversation_json,
    message_figures,
    settings_line,
    to_json,
    to_markdown,
    when,
)
from shimmy.chats.store import no_such_conversation
from shimmy.cli.output import print_fields, print_table
from shimmy.config import chats_path, load_settings
from shimmy.errors import ExitCode, ShimmyError

_PAGE = 500


def cmd_chats(args: argparse.Namespace) -> int:
    """Run ``shimmy chats ACTION``."""
    path = chats_path(load_settings())
    store = open_existing(path)
    action = args.chats_command
    try:
        if action == "list":
            return _list(store, args.json)
        if store is None:
            raise no_such_conversation(args.id)
        if action == "show":
            return _show(store, args.id)
        if action == "export":
            return _export(store, args.id, args.format)
        return _rm(store, args.id, args.yes)
    finally:
        if store is not None:
            store.close()


def _all(store: ChatStore) -> list[Conversation]:
    found: list[Conversation] = []
    while True:
        page = store.conversations(_PAGE, after=found[-1] if found else None)
        found += page
        if len(page) < _PAGE:
            return found


def _list(store: ChatStore | None, as_json: bool) -> int:
    conversations = _all(store) if store is not None else []
    counts = store.message_counts([c.id for c in conversations]) if store is not None else {}
    if as_json:
        print(json.dumps([conversation_json(c, counts[c.id]) for c in conversations], indent=2))
        return ExitCode.OK
    if not conversations:
        print("No conversations yet: the dashboard's Chat tab (F3) keeps them.", file=sys.stderr)
        return ExitCode.OK
    rows = [("ID", "UPDATED", "MODEL", "MESSAGES", "TITLE")]
    for c in conversations:
        rows.append(
            (str(c.id), when(c.updated_at), c.model or "default", str(counts[c.id]), c.title)
        )
    print_table(rows)
    return ExitCode.OK


def _show(store: ChatStore, conversation_id: int) -> int:
    conversation = store.conversation(conversation_id)
    messages = store.messages(conversation_id)
    print_fields(
        [
            ("conversation", str(conversation.id)),
            ("title", conversation.title),
            ("model", conversation.model or "the default model"),
            ("settings", settings_line(conversation)),
            ("created", when(conversation.created_at)),
            ("updated", when(conversation.updated_at)),
            ("system prompt", conversation.system_prompt.strip() or "-"),
        ]
    )
    for message in messages:
        who = "you" if message.role == "user" else (message.model or "assistant")
        print(f"\n--- {who}, {when(message.created_at)}")
        print(message.content.rstrip())
        if message.role == "assistant":
            print(f"[{message_figures(message)}]")
        if message.note:
            print(f"[note: {message.note}]")
        if message.error:
            print(f"[error: {message.error}]")
    return ExitCode.OK


def _export(store: ChatStore, conversation_id: int, format: str) -> int:
    conversation = store.conversation(conversation_id)
    messages = store.messages(conversation_id)
    if format == "json":
        print(json.dumps(to_json(conversation, messages), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(to_markdown(conversation, messages))
    return ExitCode.OK


def _rm(store: ChatStore, conversation_id: int, yes: bool) -> int:
    conversation = store.conversation(conversation_id)
    count = store.message_counts([conversation_id])[conversation_id]
    if not yes:
        if not sys.stdin.isatty():
            raise ShimmyError(
                "invalid_request", f"Not deleting conversation {conversation_id} without --yes"
            )
        answer = input(
            f"Delete conversation {conversation_id}, '{conversation.title}' "
            f"({count} messages)? [y/N] "
        )
        if answer.strip().lower() not in {"y", "yes"}:
            print("not deleted", file=sys.stderr)
            return ExitCode.OK
    store.delete_conversation(conversation_id)
    print(f"deleted conversation {conversation_id} ({count} messages)")
    return ExitCode.OK
