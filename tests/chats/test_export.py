"""A conversation exported as Markdown (each turn, with the model and settings in
a header) and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from shimmy.chats import ChatStore
from shimmy.chats.export import to_json, to_markdown


def test_markdown_and_json(tmp_path: Path) -> None:
    store = ChatStore(tmp_path / "chats.db")
    settings = {"temperature": 0.2, "max_tokens": 64, "context_policy": "drop_oldest"}
    chat = store.create_conversation(
        "Sorting", model="smollm2", system_prompt="Be brief.", settings=settings, now=0.0
    )
    store.add_message(chat.id, "user", "How do I sort?", now=60.0)
    reply = store.add_message(chat.id, "assistant", "Use `sorted()`.", model="smollm2", now=61.0)
    store.update_message(
        reply.id, tokens=5, tokens_per_second=50.0, time_to_first_token=0.1, finish_reason="stop"
    )
    cut = store.add_message(chat.id, "assistant", "half a repl", model="smollm2", now=62.0)
    markdown = to_markdown(store.conversation(chat.id), store.messages(chat.id))
    assert markdown.startswith("# Sorting\n")
    assert "- Model: smollm2" in markdown
    assert (
        "- Settings: temperature 0.2 · max tokens 64 · when the context is full: "
        "drop the oldest turns" in markdown
    )
    assert "- Created: 1970-01-01 00:00 UTC" in markdown
    assert "## System prompt\n\nBe brief." in markdown
    assert "## You\n\nHow do I sort?" in markdown
    assert "## smollm2\n\nUse `sorted()`.\n\n*smollm2 · 5 tokens · 50.0 tok/s" in markdown
    assert "100 ms to first token · stop*" in markdown
    assert "half a repl\n\n*smollm2 · cut off*" in markdown
    data = json.loads(json.dumps(to_json(store.conversation(chat.id), store.messages(chat.id))))
    assert data["title"] == "Sorting" and data["settings"] == settings
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "assistant"]
    assert data["messages"][1]["tokens"] == 5
    assert data["messages"][2]["id"] == cut.id and data["messages"][2]["finish_reason"] is None
    store.close()
