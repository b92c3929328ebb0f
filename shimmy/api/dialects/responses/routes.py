"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE
/v1/responses/{id}``, for Codex-style CLIs and the openai-agents SDK.

A response's ``output`` is a list of items in the order the model wrote them
(:mod:`shimmy.api.core.blocks`): ``message`` items with one ``output_text``
part, and ``function_call`` items. Its stream is OpenAI's typed events, each
with its ``sequence_number``: ``response.created``, ``response.in_progress``,
then per item ``response.output_item.added``, (for a message)
``response.content_part.added``, ``response.output_text.delta``...,
``response.output_text.done``, ``response.content_part.done``, (for a call)
``response.function_call_arguments.delta``... and ``.done``, then
``response.output_item.done``; and last ``response.completed``,
``response.incomplete`` (max_output_tokens) or ``response.failed``.

Responses are kept in a bounded in-memory store (:mod:`.store`) so a follow-up
can name its ``previous_response_id``. Errors are in the shape of the rest of
the OpenAI-compatible API.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from shimmy.api.core import (
    BlockClosed,
    BlockDelta,
    BlockOpened,
    EventStream,
    block_events,
    check_finished,
    read_body,
    sse_event,
    watching,
    whole_blocks,
)
from shimmy.api.dialects.responses.schemas import ResponsesBody, output_messages
from shimmy.api.dialects.responses.shapes import (
    ResponseShell,
    item_id,
    item_status,
    output_item,
    output_text,
)
from shimmy.api.dialects.responses.store import ResponseStore
from shimmy.api.errors import describe_validation_errors
from shimmy.api.requestlog import attach_generation
from shimmy.api.security import cache_scope
from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation
from shimmy.models.manager import ModelManager

Keep = Callable[[dict[str, Any]], None]
"""Stores a finished response (when the request allows it)."""


def invalid_body(exc: ValidationError, raw: bytes) -> ShimmyError:
    """The specific problem is the error ``message``, which OpenAI clients show."""
    description = describe_validation_errors(exc.errors()).replace("Value error, ", "")
    if raw.strip() in (b"", b"null"):
        description = "the request body must be a JSON object"
    return ShimmyError("invalid_request", f"Invalid request: {description}")


def build_router(manager: ModelManager, store: ResponseStore | None = None) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["responses"])
    responses = store if store is not None else ResponseStore()

    @router.post("/responses", response_model=None)
    async def create_response(request: Request) -> Response:
        body = await read_body(request, ResponsesBody, invalid_body)
        scope = cache_scope(request.scope)
        history: tuple[dict[str, Any], ...] = ()
        if body.previous_response_id is not None:
            history = responses.get(scope, body.previous_response_id).conversation
        conversation = [*history, *body.input_messages()]
        tools = body.tool_request()
        limit = manager.settings.max_tokens_limit
        requested = body.max_output_tokens
        max_tokens = limit if requested is None else min(requested, limit)

        def submit(cancel: threading.Event) -> Generation:
            generation = manager.submit_chat(
                body.model,
                [*body.instruction_messages(), *conversation],
                max_tokens=max_tokens,
                sampling=body.sampling(),
                grammar=body.grammar(),
                label="responses",
                cancel=cancel,
                cache_scope=scope,
                tools=tools,
            )
            attach_generation(generation)  # for the dashboard's request log
            return generation

        def keep(response: dict[str, Any]) -> None:
            if body.store:
                answered = output_messages(response["output"])
                responses.put(scope, response, [*conversation, *answered])

        async with watching(request) as watch:
            generation = await watch.submit(submit)
            shell = ResponseShell(body, generation.model)
            if body.stream:
                return EventStream(
                    response_events(generation, shell, keep),
                    watch=watch,
                    generations=[generation],
                )
            await watch.finish([generation])
        check_finished(generation)
        output = [
            output_item(block, item_id(block), item_status(block, generation))
            for block in whole_blocks(generation)
        ]
        response = shell.finished(generation, output)
        keep(response)
        return JSONResponse(response)

    @router.get("/responses/{response_id}")
    async def get_response(request: Request, response_id: str) -> dict[str, Any]:
        return responses.get(cache_scope(request.scope), response_id).response

    @router.delete("/responses/{response_id}")
    async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
        responses.delete(cache_scope(request.scope), response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    return router


async def response_events(
    generation: Generation, shell: ResponseShell, keep: Keep
) -> AsyncIterator[str]:
    """A response's stream, as OpenAI sends it (see the module docstring)."""
    numbers = itertools.count()

    def event(name: str, **data: Any) -> str:
        return sse_event({"type": name, "sequence_number": next(numbers), **data}, event=name)

    started = shell.response("in_progress")
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    output: list[dict[str, Any]] = []
    ids: dict[int, str] = {}
    try:
        async for change in block_events(generation):
            block = change.block
            index = block.index
            if isinstance(change, BlockOpened):
                ids[index] = item_id(block)
                item = output_item(block, ids[index], "in_progress")
                output.append(item)
                yield event("response.output_item.added", output_index=index, item=item)
                if not block.is_call:
                    yield event(
                        "response.content_part.added",
                        item_id=ids[index],
                        output_index=index,
                        content_index=0,
                        part=output_text(""),
                    )
            elif isinstance(change, BlockDelta):
                if block.is_call:
                    yield event(
                        "response.function_call_arguments.delta",
                        item_id=ids[index],
                        output_index=index,
                        delta=change.text,
                    )
                else:
                    yield event(
                        "response.output_text.delta",
                        item_id=ids[index],
                        output_index=index,
                        content_index=0,
                        delta=change.text,
                        logprobs=[],
                    )
            elif isinstance(change, BlockClosed):
                output[index] = output_item(block, ids[index], item_status(block, generation))
                for name, data in _item_done(block.is_call, ids[index], index, block.text):
                    yield event(name, **data)
                yield event("response.output_item.done", output_index=index, item=output[index])
        check_finished(generation)
        final = shell.finished(generation, output)
        keep(final)
        yield event(f"response.{final['status']}", response=final)
    except ShimmyError as exc:
        error = {"code": "server_error", "message": exc.message}
        yield event("response.failed", response=shell.response("failed", output, error=error))


def _item_done(
    is_call: bool, item_id: str, index: int, text: str
) -> list[tuple[str, dict[str, Any]]]:
    """The events that finish an item's content, before its output_item.done."""
    where = {"item_id": item_id, "output_index": index}
    if is_call:
        return [("response.function_call_arguments.done", {**where, "arguments": text})]
    return [
        (
            "response.output_text.done",
            {**where, "content_index": 0, "text": text, "logprobs": []},
        ),
        ("response.content_part.done", {**where, "content_index": 0, "part": output_text(text)}),
    ]
