"""The Chat tab with the real SmolLM2 model: streamed replies, stop, regenerate,
new chat, settings, and an API request running beside a chat reply."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from textual.app import ScreenStackError
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from shimmy.api.server_control import ServerControl
from shimmy.models.manager import ModelManager
from shimmy.tui.chat_pane import ChatMessage, ChatPane
from shimmy.tui.composer import Composer
from tests.real_model import SMOLLM2_NAME
from tests.tui.apps import make_app, server_url
from tests.waiting import eventually_async, settle

pytestmark = [pytest.mark.anyio, pytest.mark.model]


async def _type(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")


async def test_chat_streams_a_reply(manager: ModelManager, server: ServerControl) -> None:
    app = make_app(manager, server, serve=False, initial_tab="chat")
    seen: list[str] = []

    lengths: set[int] = set()

    def hook(message: object) -> None:
        if isinstance(message, ChatPane.ReplyFinished):
            seen.append(type(message).__name__)
        # Sample the reply at every message the app handles while it streams: a
        # loop in the test could miss it all when the reply is fast.
        if not app.is_running or "ReplyFinished" in seen:
            return
        try:
            turns = list(app.query(ChatMessage))
            if len(turns) == 2:
                lengths.add(len(turns[1].shown_text))
        except (ScreenStackError, NoMatches):  # before the screen or the reply is mounted
            return

    async with app.run_test(size=(100, 30), message_hook=hook) as pilot:
        await pilot.pause()
        chat = app.query_one(ChatPane)
        assert app.query_one("#chat-input", Composer).has_focus
        app.query_one("#max-tokens", Input).value = "48"
        app.query_one("#temperature", Input).value = "0"
        await _type(pilot, "Tell me about the capital of France.")
        # Watch the reply grow on screen while it streams.
        await eventually_async(lambda: "ReplyFinished" in seen, 120, 0.01, what="the reply")
        await app.workers.wait_for_complete()
        await pilot.pause()
        turns = list(app.query(ChatMessage))
        assert [t.role for t in turns] == ["user", "assistant"]
        reply = turns[1].markdown.source
        assert reply.strip()
        assert chat.history[-1] == {"role": "assistant", "content": reply}
        figures = str(turns[1].query_one(".figures", Static).content)
        assert "tokens" in figures
        assert "ReplyFinished" in seen
        partial = {n for n in lengths if 0 < n < len(reply)}
        assert partial, f"the reply appeared at once, not streamed: {sorted(lengths)}"

        # Regenerate replaces the reply; new chat clears everything.
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [t.role for t in app.query(ChatMessage)] == ["user", "assistant"]
        assert len(chat.history) == 2
        await pilot.press("ctrl+n")
        await settle(pilot, lambda: not app.query(ChatMessage), what="a new chat")
        assert chat.history == [] and chat.conversation is None


async def test_escape_stops_a_reply(manager: ModelManager, server: ServerControl) -> None:
    app = make_app(manager, server, serve=False, initial_tab="chat")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        chat = app.query_one(ChatPane)
        app.query_one("#max-tokens", Input).value = "2000"
        await _type(pilot, "Write a very long story about a dragon.")
        await eventually_async(lambda: chat.live_tokens() >= 3, 120, 0.05, what="3 tokens")
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert chat.history[-1]["role"] == "assistant"
        figures = str(app.query(ChatMessage).last().query_one(".figures", Static).content)
        assert "stopped" in figures
        assert not chat.replying


async def test_bad_settings_are_refused(manager: ModelManager, server: ServerControl) -> None:
    app = make_app(manager, server, serve=False, initial_tab="chat")
    async with app.run_test() as pilot:
        await pilot.pause()
        app.query_one("#temperature", Input).value = "9"
        await _type(pilot, "hi")
        await pilot.pause()
        assert not app.query(ChatMessage).filter(".assistant")
        assert app.query_one(ChatPane).history == []
        await pilot.press("ctrl+b")
        assert not app.query_one("#chat-settings").display


async def test_api_request_and_chat_reply_at_once(
    manager: ModelManager, server: ServerControl
) -> None:
    app = make_app(manager, server, initial_tab="chat")
    async with app.run_test(size=(100, 30)) as pilot:
        url = await server_url(app, server)
        app.query_one("#max-tokens", Input).value = "32"
        body = {"model": SMOLLM2_NAME, "prompt": "Count to ten.", "max_tokens": 32}
        api = asyncio.create_task(
            asyncio.to_thread(httpx.post, url + "/api/generate", json=body, timeout=120)
        )
        await _type(pilot, "Name three colours.")
        response = await api
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert response.status_code == 200
        assert response.json()["choices"][0]["text"].strip()
        assert app.query(ChatMessage).last().markdown.source.strip()
        # The API request shows in the Server tab's request log.
        await pilot.press("f4")
        await app.take_stats().wait()
        await pilot.pause()
        log = app.query_one("#request-log", DataTable)
        assert log.row_count >= 1
