"""The Responses API's shapes: the response object, its output items, its usage."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from shimmy.api.core import Block, Usage
from shimmy.api.dialects.responses.schemas import ResponsesBody
from shimmy.models.generation import FINISH_LENGTH, Generation


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's look: ``resp_``, ``msg_`` or ``fc_`` and 48 hex digits."""
    return prefix + secrets.token_hex(24)


def item_id(block: Block) -> str:
    """A fresh id for the output item ``block`` becomes."""
    return new_id("fc_" if block.is_call else "msg_")


def usage(generation: Generation) -> dict[str, Any]:
    counts = Usage.of(generation)
    return {
        "input_tokens": counts.prompt_tokens,
        "input_tokens_details": {"cached_tokens": counts.cached_tokens},
        "output_tokens": counts.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": counts.total_tokens,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def item_status(block: Block, generation: Generation) -> str:
    """``incomplete`` for the block the reply ended in when max_output_tokens cut it."""
    cut = generation.finish_reason == FINISH_LENGTH
    return "incomplete" if block.last and cut else "completed"


def output_item(block: Block, id: str, status: str) -> dict[str, Any]:
    """A block as an output item: a ``message`` with one ``output_text`` part (empty
    while it streams in), or a ``function_call``."""
    if block.call is None:
        content = [output_text(block.text)] if status != "in_progress" else []
        return {
            "id": id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }
    return {
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": block.text if status != "in_progress" else "",
        "call_id": block.call.id,
        "name": block.call.name,
    }


@dataclass
class ResponseShell:
    """What a response says before it is answered: its id, its time, and what the
    request asked for, which every snapshot of it repeats."""

    body: ResponsesBody
    model: str
    id: str = field(default_factory=lambda: new_id("resp_"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def response(
        self,
        status: str,
        output: list[dict[str, Any]] | None = None,
        usage: dict[str, Any] | None = None,
        *,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        """The response object, in OpenAI's field order."""
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": self.model,
            "output": output or [],
            "parallel_tool_calls": body.parallel_tool_calls,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "store": body.store,
            "temperature": body.temperature,
            "text": body.echo_text(),
            "tool_choice": body.echo_tool_choice(),
            "tools": [tool.echo() for tool in body.tools or ()],
            "top_p": body.top_p,
            "truncation": body.truncation or "disabled",
            "usage": usage,
            "user": None,
            "metadata": body.metadata or {},
        }

    def finished(self, generation: Generation, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The response of a generation that ended (``incomplete`` when
        max_output_tokens cut it short)."""
        if generation.finish_reason == FINISH_LENGTH:
            return self.response(
                "incomplete", output, usage(generation), incomplete="max_output_tokens"
            )
        return self.response("completed", output, usage(generation))
