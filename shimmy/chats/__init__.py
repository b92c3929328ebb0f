"""Conversations kept in SQLite: the dashboard's Chat tab and ``shimmy chats`` share them.

A headless package beside the API (it imports only the config and errors
layers): ``store.py`` (the database and its queries), ``schema.py`` (versions and
migrations), ``opening.py`` (where the file is, and what happens to one that
cannot be used), ``window.py`` (what of a conversation is sent to the model) and
``export.py`` (Markdown and JSON).
"""

from shimmy.chats.opening import OpenedStore, open_existing, open_store
from shimmy.chats.schema import SCHEMA_VERSION, NewerDatabase
from shimmy.chats.store import (
    MATCH_END,
    MATCH_START,
    ChatStore,
    Conversation,
    SearchHit,
    StoredMessage,
    title_from,
)

__all__ = [
    "MATCH_END",
    "MATCH_START",
    "SCHEMA_VERSION",
    "ChatStore",
    "Conversation",
    "NewerDatabase",
    "OpenedStore",
    "SearchHit",
    "StoredMessage",
    "open_existing",
    "open_store",
    "title_from",
]
