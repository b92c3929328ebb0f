"""A generation's reply as text and tool calls, for every dialect.

Without tools a reply is its text. With tools it is parsed by the model's
tool-call format (:mod:`shimmy.models.tools`): the same parser serves a stream
(:func:`reply_events`) and a whole reply (:func:`whole_reply`), so a streamed
call, assembled from its events, is the non-streamed one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from shimmy.errors import ShimmyError
from shimmy.models.generation import FINISH_CANCELLED, Generation
from shimmy.models.tools import TextDelta, ToolCall, ToolEvent, reply_parser


@dataclass(frozen=True)
class Reply:
    """A finished reply: its text (None when it is only calls) and its calls."""

    content: str | None
    calls: tuple[ToolCall, ...] = ()


async def reply_events(generation: Generation) -> AsyncIterator[ToolEvent]:
    """Text deltas and tool-call events as the generation streams (raises the
    generation's error at the end, as :meth:`Generation.stream` does)."""
    tools = generation.request.tools
    if tools is None:
        async for piece in generation.stream():
            if piece.text:
                yield TextDelta(piece.text)
        return
    parser = reply_parser(tools)
    async for piece in generation.stream():
        if piece.text:
            for event in parser.feed(piece.text):
                yield event
    for event in parser.close():
        yield event


def whole_reply(generation: Generation) -> Reply:
    """The finished generation's reply. A call cut short is text (a botched call
    is never an error); text around calls is kept, whitespace alone is not."""
    tools = generation.request.tools
    if tools is None:
        return Reply(generation.output)
    parser = reply_parser(tools)
    parser.feed(generation.output)
    parser.close()
    content = parser.content + parser.unfinished
    if parser.calls:
        return Reply(content.strip() or None, tuple(parser.calls))
    return Reply(content)


def check_finished(generation: Generation) -> None:
    """Raise what ended a finished generation that failed or was cancelled (the
    model unloaded, the server shutting down); return if it ended well."""
    if generation.error is not None:
        raise generation.error
    if generation.finish_reason == FINISH_CANCELLED:
        raise ShimmyError(
            "generation_failed",
            "The generation was cancelled",
            "The model was unloaded or the server is shutting down",
        )
