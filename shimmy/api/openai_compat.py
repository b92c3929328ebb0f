"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions,
/v1/embeddings.

Responses and stream chunks have OpenAI's shapes, so the official SDKs and the
tools built on them work unchanged. Everything runs on the same ModelManager
and engines as the native API; blocking work (loading, tokenizing, queueing)
runs off the event loop, and a client that goes away cancels its generation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from shimmy import __version__
from shimmy.api.errors import describe_validation_errors
from shimmy.api.openai_schemas import ChatCompletionBody, CompletionBody, EmbeddingBody
from shimmy.api.requestlog import attach_generation
from shimmy.api.security import cache_scope
from shimmy.api.submission import ClientGone, submit_while_connected
from shimmy.errors import ShimmyError
from shimmy.models.embeddings import Embeddings
from shimmy.models.generation import FINISH_CANCELLED, FINISH_LENGTH, Generation
from shimmy.models.grammar import grammar_for_response_format
from shimmy.models.manager import ModelManager
from shimmy.models.registry import ModelEntry

log = logging.getLogger(__name__)

Body = TypeVar("Body", bound=BaseModel)

SYSTEM_FINGERPRINT = f"shimmy-{__version__}"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# -- request parsing -----------------------------------------------------------


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The request body as ``model``; the specific problem becomes the error
    ``message``, since that is the part OpenAI clients show to their users."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        description = describe_validation_errors(exc.errors()).replace("Value error, ", "")
        if raw.strip() in (b"", b"null"):
            description = "the request body must be a JSON object"
        raise ShimmyError("invalid_request", f"Invalid request: {description}") from exc


def token_limit(manager: ModelManager, requested: int | None) -> int:
    """The request's max_tokens, bounded by the server's limit; none asked for
    means as many as the limit allows (the engine clamps it to the context)."""
    limit = manager.settings.max_tokens_limit
    return limit if requested is None else min(requested, limit)


# -- response pieces -----------------------------------------------------------


def usage(generation: Generation) -> dict[str, Any]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": generation.cached_tokens},
    }


def total_usage(generations: Sequence[Generation]) -> dict[str, Any]:
    prompt = sum(g.prompt_tokens for g in generations)
    completion = sum(g.completion_tokens for g in generations)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(g.cached_tokens for g in generations)},
    }


def finish_reason(generation: Generation) -> str:
    """OpenAI's finish reason: "length" when max_tokens or the context ran out,
    else "stop"; a failed or cancelled generation raises instead."""
    if generation.error is not None:
        raise generation.error
    if generation.finish_reason == FINISH_CANCELLED:
        raise ShimmyError(
            "generation_failed",
            "The generation was cancelled",
            "The model was unloaded or the server is shutting down",
        )
    return "length" if generation.finish_reason == FINISH_LENGTH else "stop"


def sse(data: Any) -> str:
    """One event, compact as OpenAI sends them."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def header(prefix: str, obj: str, model: str) -> dict[str, Any]:
    """The fields every completion and chunk starts with, in OpenAI's order."""
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


SSE_DONE = "data: [DONE]\n\n"


def encode_vector(vector: Sequence[float], encoding: str) -> list[float] | str:
    """A vector as floats, or as OpenAI's base64 of little-endian float32s (what
    the openai SDKs ask for by default)."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


def model_object(entry: ModelEntry, loaded: bool) -> dict[str, Any]:
    """An OpenAI model object; the fields after ``owned_by`` are shimmy's own."""
    try:
        created = int(entry.path.stat().st_mtime)
    except OSError:
        created = 0
    return {
        "id": entry.name,
        "object": "model",
        "created": created,
        "owned_by": entry.origin or entry.source,
        "source": entry.source,
        "size": entry.size,
        "context_length": entry.context_length,
        "quantization": entry.quantization,
        "loaded": loaded,
    }


# -- waiting for a generation ------------------------------------------------------


async def run_to_end(generation: Generation, request: Request) -> bool:
    """Wait until ``generation`` finishes; cancel it at once if the client goes
    away first (then return False). uvicorn does not stop a handler whose
    client left, so we listen for the disconnect message ourselves."""

    async def drain() -> None:
        async for _ in generation.stream():
            pass

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    drainer = asyncio.create_task(drain())
    listener = asyncio.create_task(client_gone())
    try:
        done, _ = await asyncio.wait({drainer, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        listener.cancel()
        if not drainer.done():  # the client left, or this handler was cancelled
            generation.cancel()
            drainer.cancel()
            log.info("client went away: generation %s cancelled", generation.id)
    if drainer not in done:
        return False
    try:
        drainer.result()
    except ShimmyError:
        pass  # reported by finish_reason()
    return True


async def run_all_to_end(generations: Sequence[Generation], request: Request) -> bool:
    for generation in generations:
        if not await run_to_end(generation, request):
            for other in generations:
                other.cancel()
            return False
    return True


async def submit_all(
    submit: Callable[[str], Generation], prompts: Sequence[str]
) -> list[Generation]:
    """Queue one generation per prompt; if any is refused, cancel the rest."""
    generations: list[Generation] = []
    try:
        for prompt in prompts:
            generations.append(await run_in_threadpool(submit, prompt))
    except BaseException:
        for generation in generations:
            generation.cancel()
        raise
    return generations


# -- the router ----------------------------------------------------------------------


def build_openai_router(manager: ModelManager) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"])

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        entries = await run_in_threadpool(manager.registry.entries)
        loaded = set(manager.loaded_names())
        return {
            "object": "list",
            "data": [model_object(e, e.name in loaded) for e in entries if e.usable],
        }

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        entry = await run_in_threadpool(manager.resolve, model_id)
        if not entry.usable:
            raise ShimmyError(
                "model_not_found",
                "The specified model was not found",
                f"Model '{model_id}' is not usable: {entry.error}",
            )
        return model_object(entry, manager.is_loaded(entry.name))

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        body = await parse_body(request, ChatCompletionBody)

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
                cache_scope=cache_scope(request.scope),
            )
            attach_generation(generation)  # for the dashboard's request log
            return generation

        try:
            generation = await submit_while_connected(request.receive, submit)
        except ClientGone:
            return Response(status_code=204)  # nobody is there to read it
        obj = "chat.completion.chunk" if body.stream else "chat.completion"
        meta = header("chatcmpl", obj, generation.model)
        if body.stream:
            return StreamingResponse(
                _chat_stream(generation, meta, body.include_usage),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        if not await run_to_end(generation, request):
            return Response(status_code=204)
        reason = finish_reason(generation)
        return JSONResponse(
            {
                **meta,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": generation.output,
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                ],
                "usage": usage(generation),
            }
        )

    @router.post("/completions", response_model=None)
    async def completions(request: Request) -> Response:
        body = await parse_body(request, CompletionBody)

        def submit(prompt: str) -> Generation:
            return manager.submit_prompt(
                body.model,
                prompt,
                max_tokens=token_limit(manager, body.max_tokens),
                sampling=body.sampling(),
                stop=body.stop_strings(),
                raw=True,
                label="openai",
                cache_scope=cache_scope(request.scope),
            )

        prompts = body.prompts
        generations = await submit_all(submit, prompts)
        attach_generation(generations[0])  # the request log shows one per request
        meta = header("cmpl", "text_completion", generations[0].model)
        echoes = prompts if body.echo else [""] * len(prompts)
        if body.stream:
            return StreamingResponse(
                _completion_stream(generations, echoes, meta, body.include_usage),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        if not await run_all_to_end(generations, request):
            return Response(status_code=204)
        choices = [
            {
                "text": echo + generation.output,
                "index": index,
                "logprobs": None,
                "finish_reason": finish_reason(generation),
            }
            for index, (generation, echo) in enumerate(zip(generations, echoes, strict=True))
        ]
        return JSONResponse(
            {
                **meta,
                "choices": choices,
                "usage": total_usage(generations),
            }
        )

    @router.post("/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await parse_body(request, EmbeddingBody)
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


# -- streams -------------------------------------------------------------------------


async def _chat_stream(
    generation: Generation, meta: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    """Chunks as OpenAI sends them: the role first, then content deltas, then an
    empty delta with the finish reason, then (if asked) the usage, then [DONE]."""

    def chunk(delta: dict[str, Any], reason: str | None = None) -> str:
        data: dict[str, Any] = {
            **meta,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
        }
        if include_usage:
            data["usage"] = None
        return sse(data)

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for piece in generation.stream():
            if piece.text:
                yield chunk({"content": piece.text})
        yield chunk({}, finish_reason(generation))
        if include_usage:
            yield sse(
                {
                    **meta,
                    "choices": [],
                    "usage": usage(generation),
                }
            )
    except ShimmyError as exc:
        # The openai SDKs raise an APIError for a chunk with an "error" key.
        yield sse(exc.to_dict())
    finally:
        # Starlette cancels this generator when the client disconnects.
        if not generation.done:
            generation.cancel()
            log.info("client went away: generation %s cancelled", generation.id)
    yield SSE_DONE


async def _completion_stream(
    generations: Sequence[Generation],
    echoes: Sequence[str],
    meta: dict[str, Any],
    include_usage: bool,
) -> AsyncIterator[str]:
    """Text completion chunks, one prompt after another (each chunk names its
    prompt's ``index``), then the usage if asked, then [DONE]."""

    def chunk(index: int, text: str, reason: str | None = None) -> str:
        data: dict[str, Any] = {
            **meta,
            "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": reason}],
        }
        if include_usage:
            data["usage"] = None
        return sse(data)

    try:
        for index, (generation, echo) in enumerate(zip(generations, echoes, strict=True)):
            if echo:
                yield chunk(index, echo)
            async for piece in generation.stream():
                if piece.text:
                    yield chunk(index, piece.text)
            yield chunk(index, "", finish_reason(generation))
        if include_usage:
            yield sse(
                {
                    **meta,
                    "choices": [],
                    "usage": total_usage(generations),
                }
            )
    except ShimmyError as exc:
        yield sse(exc.to_dict())
    finally:
        for generation in generations:
            if not generation.done:
                generation.cancel()
                log.info("client went away: generation %s cancelled", generation.id)
    yield SSE_DONE
