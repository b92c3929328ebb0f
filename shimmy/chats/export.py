"""A conversation as Markdown or JSON (``shimmy chats export``), and the line of
figures under a reply, worded the same in the dashboard and in an export."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shimmy.chats.store import Conversation, StoredMessage
from shimmy.chats.window import POLICIES

_REASONS = {
    "cancelled": "stopped",
    "length": "max tokens reached",
    "error": "failed",
}


def reply_figures(
    *,
    model: str | None,
    tokens: int | None,
    tokens_per_second: float | None,
    time_to_first_token: float | None,
    finish_reason: str | None,
    done: bool = True,
) -> str:
    """ "smollm2 · 48 tokens · 91.2 tok/s · 120 ms to first token · stop"; a reply
    that is not done and has no finish reason was cut off (shimmy was stopped)."""
    bits = [model or ""]
    if tokens is not None:
        bits.append(f"{tokens} tokens")
    if tokens_per_second:
        bits.append(f"{tokens_per_second:.1f} tok/s")
    if time_to_first_token is not None:
        bits.append(f"{time_to_first_token * 1000:.0f} ms to first token")
    if finish_reason is None:
        bits.append("" if not done else "cut off")
    else:
        bits.append(_REASONS.get(finish_reason, finish_reason))
    return " · ".join(b for b in bits if b)


def message_figures(message: StoredMessage) -> str:
    """The figures of a stored reply."""
    return reply_figures(
        model=message.model,
        tokens=message.tokens,
        tokens_per_second=message.tokens_per_second,
        time_to_first_token=message.time_to_first_token,
        finish_reason=message.finish_reason,
    )


def settings_line(conversation: Conversation) -> str:
    """ "temperature 0.7 · max tokens 512 · when the context is full: drop ..." """
    settings = conversation.settings
    bits = []
    if "temperature" in settings:
        bits.append(f"temperature {settings['temperature']:g}")
    if "max_tokens" in settings:
        bits.append(f"max tokens {settings['max_tokens']}")
    policy = settings.get("context_policy")
    if policy in POLICIES:
        bits.append(f"when the context is full: {POLICIES[policy]}")
    return " · ".join(bits) or "-"


def when(seconds: float) -> str:
    """A time as the exports and the command line show it: UTC, to the minute."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def to_markdown(conversation: Conversation, messages: Sequence[StoredMessage]) -> str:
    """The conversation as a Markdown document: a header with its model and
    settings, then each turn under a heading naming who wrote it."""
    lines = [f"# {conversation.title}", ""]
    lines.append(f"- Conversation: {conversation.id}")
    lines.append(f"- Model: {conversation.model or 'the default model'}")
    lines.append(f"- Settings: {settings_line(conversation)}")
    lines.append(f"- Created: {when(conversation.created_at)}")
    lines.append(f"- Updated: {when(conversation.updated_at)}")
    if conversation.system_prompt.strip():
        lines += ["", "## System prompt", "", conversation.system_prompt.strip()]
    for message in messages:
        who = "You" if message.role == "user" else (message.model or "Assistant")
        lines += ["", f"## {who}", "", message.content.rstrip() or "*(empty)*"]
        if message.role == "assistant":
            lines += ["", f"*{message_figures(message)}*"]
        if message.note:
            lines += ["", f"*Note: {message.note}*"]
        if message.error:
            lines += ["", f"*Error: {message.error}*"]
    return "\n".join(lines) + "\n"


def to_json(conversation: Conversation, messages: Sequence[StoredMessage]) -> dict[str, Any]:
    """The conversation and every message, with their figures, as JSON values."""
    return {
        **conversation_json(conversation),
        "messages": [
            {
                "id": m.id,
                "role": m.role,
                "content": m.content,
                "created_at": iso(m.created_at),
                "model": m.model,
                "tokens": m.tokens,
                "tokens_per_second": m.tokens_per_second,
                "time_to_first_token": m.time_to_first_token,
                "finish_reason": m.finish_reason,
                "error": m.error,
                "note": m.note,
            }
            for m in messages
        ],
    }


def conversation_json(
    conversation: Conversation, message_count: int | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "settings": conversation.settings,
        "created_at": iso(conversation.created_at),
        "updated_at": iso(conversation.updated_at),
    }
    if message_count is not None:
        data["message_count"] = message_count
    return data


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
