"""Anthropic's response shapes: the message, its content blocks, its usage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shimmy.api.core import Block, Usage, check_finished
from shimmy.models.generation import FINISH_LENGTH, Generation
from shimmy.models.tools.spec import new_call_id


def message_id() -> str:
    """A fresh message id, in Anthropic's look (``msg_`` and 24 letters and digits)."""
    return new_call_id(24, prefix="msg_")


def usage(generation: Generation) -> dict[str, Any]:
    """Anthropic's usage block. Its ``input_tokens`` are the prompt tokens read
    afresh: those reused from the prompt cache are ``cache_read_input_tokens``
    (the total input is their sum, as Anthropic counts it)."""
    counts = Usage.of(generation)
    return {
        "input_tokens": counts.prompt_tokens - counts.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": counts.cached_tokens,
        "output_tokens": counts.completion_tokens,
    }


def content_block(block: Block) -> dict[str, Any]:
    """A block of a message's ``content``: text, or a tool_use whose ``input`` is
    the call's arguments as an object ({} for a call cut short)."""
    if block.call is None:
        return {"type": "text", "text": block.text}
    arguments = block.tool_call().arguments_object()
    return {
        "type": "tool_use",
        "id": block.call.id,
        "name": block.call.name,
        "input": arguments if isinstance(arguments, dict) else {},
    }


def stop_reason(
    generation: Generation, blocks: Sequence[Block], stop_sequences: Sequence[str]
) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence``: ``tool_use`` when the reply
    ended after its calls, ``max_tokens`` when it was cut short, ``stop_sequence``
    when one of the request's ended it (a template's own end-of-turn string is
    ``end_turn``), else ``end_turn``. Raises for a failed generation."""
    check_finished(generation)
    if generation.finish_reason == FINISH_LENGTH:
        return "max_tokens", None
    if any(block.is_call for block in blocks):
        return "tool_use", None
    if generation.stop_string is not None and generation.stop_string in stop_sequences:
        return "stop_sequence", generation.stop_string
    return "end_turn", None


def message(
    id: str,
    model: str,
    content: list[dict[str, Any]],
    reason: str | None,
    sequence: str | None,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """A message object, in Anthropic's field order."""
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage,
    }
