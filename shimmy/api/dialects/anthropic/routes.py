"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST
/v1/messages/count_tokens``, so Claude Code and everything built on Anthropic's
SDKs run on shimmy (``ANTHROPIC_BASE_URL``).

A message's content is a list of blocks (text and tool_use) in the order the
model wrote them (:mod:`shimmy.api.core.blocks`); its stream is Anthropic's
named events: ``message_start``, then each block's ``content_block_start``,
``content_block_delta`` (``text_delta`` or ``input_json_delta``) and
``content_block_stop``, a ``ping`` after the first block opens, then
``message_delta`` (the stop reason and the usage) and ``message_stop``; a
failure mid-stream is an ``error`` event. Errors under these paths are in
Anthropic's envelope (:func:`shimmy.api.error_shapes.error_body`). The API key comes
as ``x-api-key`` or ``Authorization: Bearer`` (shimmy's key middleware reads
both); ``anthropic-version`` and ``anthropic-beta`` headers are accepted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from shimmy.api.core import (
    BlockClosed,
    BlockDelta,
    BlockOpened,
    EventStream,
    block_events,
    read_body,
    sse_event,
    watching,
    whole_blocks,
)
from shimmy.api.dialects.anthropic.schemas import CountTokensBody, MessagesBody
from shimmy.api.dialects.anthropic.shapes import (
    content_block,
    message,
    message_id,
    stop_reason,
    usage,
)
from shimmy.api.error_shapes import anthropic_error
from shimmy.api.errors import describe_validation_errors
from shimmy.api.requestlog import attach_generation
from shimmy.api.security import cache_scope
from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation
from shimmy.models.manager import ModelManager


def invalid_body(exc: ValidationError, raw: bytes) -> ShimmyError:
    """Anthropic's messages name the field and the problem ("max_tokens: Field
    required"); clients show the message."""
    description = describe_validation_errors(exc.errors()).replace("Value error, ", "")
    if raw.strip() in (b"", b"null"):
        description = "the request body must be a JSON object"
    return ShimmyError("invalid_request", description)


def build_router(manager: ModelManager) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["anthropic"])

    @router.post("/messages", response_model=None)
    async def messages(request: Request) -> Response:
        body = await read_body(request, MessagesBody, invalid_body)
        scope = cache_scope(request.scope)
        tools = body.tool_request()
        conversation = body.template_messages()
        max_tokens = min(body.max_tokens, manager.settings.max_tokens_limit)

        def submit(cancel: threading.Event) -> Generation:
            generation = manager.submit_chat(
                body.model,
                conversation,
                max_tokens=max_tokens,
                sampling=body.sampling(),
                stop=body.stop_strings(),
                grammar=body.grammar(),
                label="anthropic",
                cancel=cancel,
                cache_scope=scope,
                tools=tools,
            )
            attach_generation(generation)  # for the dashboard's request log
            return generation

        id = message_id()
        stops = body.stop_strings()
        async with watching(request) as watch:
            generation = await watch.submit(submit)
            if body.stream:
                return EventStream(
                    message_events(generation, id, stops), watch=watch, generations=[generation]
                )
            await watch.finish([generation])
        blocks = whole_blocks(generation)
        reason, sequence = stop_reason(generation, blocks, stops)
        content = [content_block(block) for block in blocks]
        return JSONResponse(
            message(id, generation.model, content, reason, sequence, usage(generation))
        )

    @router.post("/messages/count_tokens")
    async def count_tokens(request: Request) -> dict[str, Any]:
        body = await read_body(request, CountTokensBody, invalid_body)
        tools = body.tool_request()
        conversation = body.template_messages()
        count = await run_in_threadpool(
            lambda: manager.count_chat_tokens(body.model, conversation, tools=tools)
        )
        return {"input_tokens": count}

    return router


def _event(name: str, **data: Any) -> str:
    return sse_event({"type": name, **data}, event=name)


async def _prompt_read(generation: Generation) -> None:
    """Until the generation's first piece (or its end): its prompt has been read,
    so its cached tokens are known for ``message_start``'s usage."""
    pieces = cast(AsyncGenerator[Any, None], generation.stream())  # it is one
    async with contextlib.aclosing(pieces):
        await anext(pieces, None)


async def message_events(
    generation: Generation, id: str, stop_sequences: Sequence[str]
) -> AsyncIterator[str]:
    """A message's stream, as Anthropic sends it (see the module docstring)."""
    pinged = False
    try:
        await _prompt_read(generation)
        start = message(id, generation.model, [], None, None, usage(generation))
        yield _event("message_start", message=start)
        blocks = []
        async for change in block_events(generation):
            block = change.block
            if isinstance(change, BlockOpened):
                blocks.append(block)
                opened = content_block(block)
                yield _event("content_block_start", index=block.index, content_block=opened)
                if not pinged:
                    pinged = True
                    yield _event("ping")
            elif isinstance(change, BlockDelta):
                if block.is_call:
                    delta = {"type": "input_json_delta", "partial_json": change.text}
                else:
                    delta = {"type": "text_delta", "text": change.text}
                yield _event("content_block_delta", index=block.index, delta=delta)
            elif isinstance(change, BlockClosed):
                yield _event("content_block_stop", index=block.index)
        if not pinged:
            yield _event("ping")
        reason, sequence = stop_reason(generation, blocks, stop_sequences)
        yield _event(
            "message_delta",
            delta={"stop_reason": reason, "stop_sequence": sequence},
            usage=usage(generation),
        )
        yield _event("message_stop")
    except ShimmyError as exc:
        # Anthropic's SDKs raise the error an "error" event carries.
        yield sse_event(anthropic_error(exc), event="error")
