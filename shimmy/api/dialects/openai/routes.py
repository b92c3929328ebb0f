"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions,
/v1/embeddings.

Responses and stream chunks have OpenAI's shapes, so the official SDKs and the
tools built on them work unchanged. Everything runs on the same ModelManager
and engines as the native API, through the API core (submitting off the event
loop, cancelling when the client leaves, the SSE framing).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from shimmy.api.core import (
    SSE_DONE,
    EventStream,
    LogprobCursor,
    read_body,
    reply_events,
    sse_event,
    watching,
    whole_reply,
)
from shimmy.api.core.watch import Submit
from shimmy.api.dialects.openai.schemas import ChatCompletionBody, CompletionBody, EmbeddingBody
from shimmy.api.dialects.openai.shapes import (
    chat_logprobs,
    completion_logprobs,
    encode_vector,
    finish_reason,
    header,
    model_object,
    tool_call,
    usage,
)
from shimmy.api.errors import describe_validation_errors
from shimmy.api.requestlog import attach_generation
from shimmy.api.security import cache_scope
from shimmy.errors import ShimmyError
from shimmy.models.embeddings import Embeddings
from shimmy.models.generation import Generation
from shimmy.models.grammar import grammar_for_response_format
from shimmy.models.manager import ModelManager
from shimmy.models.tools import CallStarted, TextDelta, ToolCall


def invalid_body(exc: ValidationError, raw: bytes) -> ShimmyError:
    """The specific problem is the error ``message``, since that is the part
    OpenAI clients show to their users."""
    description = describe_validation_errors(exc.errors()).replace("Value error, ", "")
    if raw.strip() in (b"", b"null"):
        description = "the request body must be a JSON object"
    return ShimmyError("invalid_request", f"Invalid request: {description}")


def token_limit(manager: ModelManager, requested: int | None) -> int:
    """The request's max_tokens, bounded by the server's limit; none asked for
    means as many as the limit allows (the engine clamps it to the context)."""
    limit = manager.settings.max_tokens_limit
    return limit if requested is None else min(requested, limit)


def echo_of(manager: ModelManager, model: str, prompt: str | list[int]) -> str:
    """The prompt as ``echo`` shows it: its text, or the text of its token ids."""
    return prompt if isinstance(prompt, str) else manager.engine(model).detokenize(prompt)


def chat_choice(index: int, generation: Generation, logprobs: bool) -> dict[str, Any]:
    """One finished choice of a chat completion: its message (text, or tool calls
    with any text around them), its logprobs if asked, its finish reason."""
    reason = finish_reason(generation)
    reply = whole_reply(generation)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    entries = None
    if reply.calls:
        message["tool_calls"] = [tool_call(call) for call in reply.calls]
        reason = "tool_calls"
    elif logprobs:
        text_bytes = len((reply.content or "").encode())
        entries = chat_logprobs(LogprobCursor(generation).rest(text_bytes))
    return {"index": index, "message": message, "logprobs": entries, "finish_reason": reason}


def build_router(manager: ModelManager) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"])

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        entries = await run_in_threadpool(manager.registry.entries)
        loaded = set(manager.loaded_names())
        return {
            "object": "list",
            "data": [model_object(e, e.name in loaded) for e in entries if e.offered],
        }

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        entry = await run_in_threadpool(manager.resolve, model_id)
        if not entry.offered:
            raise ShimmyError(
                "model_not_found",
                "The specified model was not found",
                f"Model '{model_id}' is not usable: {entry.error}",
            )
        return model_object(entry, manager.is_loaded(entry.name))

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        body = await read_body(request, ChatCompletionBody, invalid_body)
        scope = cache_scope(request.scope)
        tools = body.tool_request()

        def submit(cancel: threading.Event) -> Generation:
            grammar = grammar_for_response_format(body.response_format)
            generation = manager.submit_chat(
                body.model,
                body.template_messages(),
                max_tokens=token_limit(manager, body.token_limit),
                sampling=body.sampling(),
                stop=body.stop_strings(),
                grammar=grammar,
                label="openai",
                cancel=cancel,
                cache_scope=scope,
                tools=tools,
                logprobs=body.logprob_count,
                n=body.n,
            )
            attach_generation(generation)  # for the dashboard's request log
            return generation

        async with watching(request) as watch:
            generations = list((await watch.submit(submit)).choices)
            obj = "chat.completion.chunk" if body.stream else "chat.completion"
            meta = header("chatcmpl", obj, generations[0].model)
            if body.stream:
                return EventStream(
                    chat_chunks(generations, meta, body.include_usage, body.logprobs is True),
                    watch=watch,
                    generations=generations,
                )
            await watch.finish(generations)
        choices = [
            chat_choice(index, generation, body.logprobs is True)
            for index, generation in enumerate(generations)
        ]
        return JSONResponse({**meta, "choices": choices, "usage": usage(generations)})

    @router.post("/completions", response_model=None)
    async def completions(request: Request) -> Response:
        body = await read_body(request, CompletionBody, invalid_body)
        scope = cache_scope(request.scope)

        def submitter(prompt: str | list[int]) -> Submit:
            def submit(cancel: threading.Event) -> Generation:
                return manager.submit_prompt(
                    body.model,
                    prompt,
                    max_tokens=token_limit(manager, body.max_tokens),
                    sampling=body.sampling(),
                    stop=body.stop_strings(),
                    raw=True,
                    label="openai",
                    cancel=cancel,
                    cache_scope=scope,
                    logprobs=body.logprob_count,
                    n=body.n,
                )

            return submit

        prompts = body.prompts
        async with watching(request) as watch:
            firsts = await watch.submit_all([submitter(p) for p in prompts])
            # Each prompt's n choices, one after another (OpenAI's order of indexes).
            generations = [choice for first in firsts for choice in first.choices]
            attach_generation(generations[0])  # the request log shows one per request
            meta = header("cmpl", "text_completion", generations[0].model)
            echoes = [
                echo_of(manager, generations[0].model, p) if body.echo else ""
                for p in prompts
                for _ in range(body.n)
            ]
            if body.stream:
                return EventStream(
                    completion_chunks(
                        generations, echoes, meta, body.include_usage, body.logprobs is not None
                    ),
                    watch=watch,
                    generations=generations,
                )
            await watch.finish(generations)
        choices = []
        for index, (generation, echo) in enumerate(zip(generations, echoes, strict=True)):
            logprobs = None
            if body.logprobs is not None:
                entries = LogprobCursor(generation).rest(len(generation.output.encode()))
                logprobs = completion_logprobs(entries, len(echo))
            choices.append(
                {
                    "text": echo + generation.output,
                    "index": index,
                    "logprobs": logprobs,
                    "finish_reason": finish_reason(generation),
                }
            )
        return JSONResponse({**meta, "choices": choices, "usage": usage(generations)})

    @router.post("/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await read_body(request, EmbeddingBody, invalid_body)
        result: Embeddings = await run_in_threadpool(manager.embed, body.model, body.inputs)
        size = len(result.vectors[0]) if result.vectors else 0
        if body.dimensions is not None and body.dimensions != size:
            raise ShimmyError(
                "invalid_request",
                f"dimensions must be {size} for model '{result.model}'",
                "shimmy does not shorten embeddings",
            )
        return {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": encode_vector(vector, body.encoding_format),
                }
                for index, vector in enumerate(result.vectors)
            ],
            "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }

    return router


async def chat_chunks(
    generations: Sequence[Generation],
    meta: dict[str, Any],
    include_usage: bool,
    logprobs: bool = False,
) -> AsyncIterator[str]:
    """Chunks as OpenAI sends them, choice after choice (each chunk names its
    ``index``): the role first, then content deltas (with their tokens' logprobs,
    if asked) or tool-call deltas, then an empty delta with the finish reason;
    after the last choice the usage (if asked), then [DONE]."""
    try:
        for index, generation in enumerate(generations):
            async for data in _choice_chunks(index, generation, meta, include_usage, logprobs):
                yield data
        if include_usage:
            yield sse_event({**meta, "choices": [], "usage": usage(generations)})
    except ShimmyError as exc:
        # The openai SDKs raise an APIError for a chunk with an "error" key.
        yield sse_event(exc.to_dict())
    yield SSE_DONE


async def _choice_chunks(
    index: int,
    generation: Generation,
    meta: dict[str, Any],
    include_usage: bool,
    logprobs: bool,
) -> AsyncIterator[str]:
    cursor = LogprobCursor(generation) if logprobs else None
    released = 0

    def chunk(delta: dict[str, Any], reason: str | None = None, entries: Any = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": entries, "finish_reason": reason}
        data: dict[str, Any] = {**meta, "choices": [choice]}
        if include_usage:
            data["usage"] = None
        return sse_event(data)

    yield chunk({"role": "assistant", "content": ""})
    called = False
    async for event in reply_events(generation):
        if isinstance(event, TextDelta):
            entries = None
            if cursor is not None:
                released += len(event.text.encode())
                entries = chat_logprobs(cursor.released(released))
            yield chunk({"content": event.text}, entries=entries)
        elif isinstance(event, CallStarted):
            called = True
            start = {"index": event.index, **tool_call(ToolCall(event.id, event.name, ""))}
            yield chunk({"tool_calls": [start]})
        else:
            arguments = {"index": event.index, "function": {"arguments": event.text}}
            yield chunk({"tool_calls": [arguments]})
    reason = finish_reason(generation)
    last = chat_logprobs(cursor.rest(released)) if cursor is not None and not called else None
    yield chunk({}, "tool_calls" if called and reason == "stop" else reason, last)


async def completion_chunks(
    generations: Sequence[Generation],
    echoes: Sequence[str],
    meta: dict[str, Any],
    include_usage: bool,
    logprobs: bool = False,
) -> AsyncIterator[str]:
    """Text completion chunks, one prompt after another (each chunk names its
    prompt's ``index``, and carries its tokens' logprobs if asked), then the
    usage if asked, then [DONE]."""

    def chunk(index: int, text: str, reason: str | None = None, entries: Any = None) -> str:
        data: dict[str, Any] = {
            **meta,
            "choices": [
                {"text": text, "index": index, "logprobs": entries, "finish_reason": reason}
            ],
        }
        if include_usage:
            data["usage"] = None
        return sse_event(data)

    try:
        for index, (generation, echo) in enumerate(zip(generations, echoes, strict=True)):
            cursor = LogprobCursor(generation) if logprobs else None
            offset = len(echo)  # where the next token's text begins in the choice's text
            released = 0
            if echo:
                yield chunk(index, echo)
            async for piece in generation.stream():
                if piece.text:
                    entries = None
                    if cursor is not None:
                        released += len(piece.text.encode())
                        taken = cursor.released(released)
                        entries = completion_logprobs(taken, offset)
                        offset += sum(len(e.text) for e in taken)
                    yield chunk(index, piece.text, entries=entries)
            last = None
            if cursor is not None:
                last = completion_logprobs(cursor.rest(released), offset)
            yield chunk(index, "", finish_reason(generation), last)
        if include_usage:
            yield sse_event({**meta, "choices": [], "usage": usage(generations)})
    except ShimmyError as exc:
        yield sse_event(exc.to_dict())
    yield SSE_DONE
