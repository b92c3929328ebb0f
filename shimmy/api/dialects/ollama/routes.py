"""Ollama's API: /api/chat, /api/generate, /api/embed, /api/embeddings, /api/tags,
/api/show, /api/ps, /api/pull, /api/delete, /api/copy, /api/version and ``/``.

Served on the Ollama listener (``--ollama``, by default 127.0.0.1:11434) over
the same ModelManager as the main one, through the API core: submitting off
the event loop, cancelling when the client leaves, the NDJSON framing. Streams
are Ollama's default (``stream`` true unless false): one JSON object a line,
the last with ``done: true``, its ``done_reason`` and real nanosecond timings.
A model named without messages (or prompt) is loaded (``done_reason: load``),
or unloaded with ``keep_alive: 0`` (``unload``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from shimmy.api.core import (
    NDJSON_MEDIA_TYPE,
    EventStream,
    ndjson_line,
    read_body,
    reply_events,
    watching,
    whole_reply,
)
from shimmy.api.dialects.ollama import names, shapes
from shimmy.api.dialects.ollama.errors import error_line, not_implemented
from shimmy.api.dialects.ollama.pull import copy_model, delete_model, pull_route
from shimmy.api.dialects.ollama.schemas import (
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    NamedBody,
)
from shimmy.api.errors import describe_validation_errors
from shimmy.api.requestlog import attach_generation
from shimmy.api.security import cache_scope
from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation
from shimmy.models.manager import ModelManager
from shimmy.models.registry import ModelEntry
from shimmy.models.tools import CallArguments, CallStarted, TextDelta, ToolCall

# The Ollama version /api/version reports: the one whose API documentation
# (docs/api.md) these routes follow. Clients gate features on it (VS Code's
# Copilot asks for 0.6.4 or later).
OLLAMA_VERSION = "0.32.8"
JSON_MEDIA_TYPE = "application/json; charset=utf-8"


def invalid_body(exc: ValidationError, raw: bytes) -> ShimmyError:
    """Ollama's 400: the problem in one line."""
    if raw.strip() in (b"", b"null"):
        return ShimmyError("invalid_request", "missing request body")
    description = describe_validation_errors(exc.errors()).replace("Value error, ", "")
    return ShimmyError("invalid_request", description)


def build_router(manager: ModelManager) -> APIRouter:
    router = APIRouter(tags=["ollama"])

    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def running() -> Response:
        return PlainTextResponse("Ollama is running")

    @router.api_route("/api/version", methods=["GET", "HEAD"])
    async def version() -> dict[str, str]:
        return {"version": OLLAMA_VERSION}

    @router.api_route("/api/tags", methods=["GET", "HEAD"])
    async def tags() -> dict[str, Any]:
        return {"models": await run_in_threadpool(_listed_models, manager)}

    @router.post("/api/show")
    async def show(request: Request) -> dict[str, Any]:
        body = await read_body(request, NamedBody, invalid_body)
        return await run_in_threadpool(_show, manager, body.wanted)

    @router.get("/api/ps")
    async def ps() -> dict[str, Any]:
        return {"models": await run_in_threadpool(_running_models, manager)}

    @router.post("/api/chat", response_model=None)
    async def chat(request: Request) -> Response:
        timing = shapes.Timing()
        body = await read_body(request, ChatBody, invalid_body)
        if not body.messages:
            return await _load_or_unload(manager, body, {"message": _assistant("")})
        scope = cache_scope(request.scope)
        tools = body.tool_request()
        limit = body.token_limit(manager.settings.max_tokens_limit)

        def submit(cancel: threading.Event) -> Generation:
            entry = _load(manager, body.model, body.keep_alive_seconds, timing)
            generation = manager.submit_chat(
                entry.name,
                body.template_messages(),
                max_tokens=limit,
                sampling=body.options.sampling(),
                stop=body.stop_strings(),
                grammar=body.grammar(),
                label="ollama",
                cancel=cancel,
                cache_scope=scope,
                tools=tools,
                keep_alive=body.keep_alive_seconds,
            )
            attach_generation(generation)  # for the dashboard's request log
            return generation

        async with watching(request) as watch:
            generation = await watch.submit(submit)
            if body.stream:
                return EventStream(
                    _chat_lines(generation, body.model, timing),
                    watch=watch,
                    generations=[generation],
                    media_type=NDJSON_MEDIA_TYPE,
                )
            await watch.finish([generation])
        reason = shapes.done_reason(generation)
        reply = whole_reply(generation)
        message = _assistant(reply.content or "")
        if reply.calls:
            message["tool_calls"] = [shapes.tool_call(c, i) for i, c in enumerate(reply.calls)]
        return _json(
            {
                "model": body.model,
                "created_at": shapes.timestamp(),
                "message": message,
                "done": True,
                "done_reason": reason,
                **shapes.reply_metrics(generation, timing),
            }
        )

    @router.post("/api/generate", response_model=None)
    async def generate(request: Request) -> Response:
        timing = shapes.Timing()
        body = await read_body(request, GenerateBody, invalid_body)
        if not body.prompt:
            return await _load_or_unload(manager, body, {"response": ""})
        scope = cache_scope(request.scope)
        limit = body.token_limit(manager.settings.max_tokens_limit)

        def submit(cancel: threading.Event) -> Generation:
            entry = _load(manager, body.model, body.keep_alive_seconds, timing)
            if body.system:
                generation = manager.submit_chat(
                    entry.name,
                    [
                        {"role": "system", "content": body.system},
                        {"role": "user", "content": body.prompt},
                    ],
                    max_tokens=limit,
                    sampling=body.options.sampling(),
                    stop=body.stop_strings(),
                    grammar=body.grammar(),
                    label="ollama",
                    cancel=cancel,
                    cache_scope=scope,
                    keep_alive=body.keep_alive_seconds,
                )
            else:
                generation = manager.submit_prompt(
                    entry.name,
                    body.prompt,
                    max_tokens=limit,
                    sampling=body.options.sampling(),
                    stop=body.stop_strings(),
                    raw=body.raw,
                    grammar=body.grammar(),
                    label="ollama",
                    cancel=cancel,
                    cache_scope=scope,
                    keep_alive=body.keep_alive_seconds,
                )
            attach_generation(generation)
            return generation

        async with watching(request) as watch:
            generation = await watch.submit(submit)
            if body.stream:
                return EventStream(
                    _generate_lines(generation, body.model, timing),
                    watch=watch,
                    generations=[generation],
                    media_type=NDJSON_MEDIA_TYPE,
                )
            await watch.finish([generation])
        reason = shapes.done_reason(generation)
        return _json(
            {
                "model": body.model,
                "created_at": shapes.timestamp(),
                "response": generation.output,
                "done": True,
                "done_reason": reason,
                **shapes.reply_metrics(generation, timing),
            }
        )

    @router.post("/api/embed")
    async def embed(request: Request) -> Response:
        timing = shapes.Timing()
        body = await read_body(request, EmbedBody, invalid_body)

        def run() -> dict[str, Any]:
            entry = names.resolve(manager, body.model)
            inputs = body.inputs
            if not inputs:
                return {"model": body.model, "embeddings": []}
            result = manager.embed(
                entry.name, inputs, truncate=body.truncate, keep_alive=body.keep_alive_seconds
            )
            vectors = result.vectors
            if body.dimensions is not None:
                vectors = [_shortened(v, body.dimensions) for v in vectors]
            return {
                "model": body.model,
                "embeddings": vectors,
                "total_duration": shapes.nanoseconds(time.monotonic() - timing.received),
                "load_duration": shapes.nanoseconds(result.load_seconds),
                "prompt_eval_count": result.prompt_tokens,
            }

        return _json(await run_in_threadpool(run))

    @router.post("/api/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await read_body(request, EmbeddingsBody, invalid_body)

        def run() -> dict[str, Any]:
            entry = names.resolve(manager, body.model)
            if not body.prompt:
                return {"embedding": []}
            result = manager.embed(
                entry.name, [body.prompt], truncate=True, keep_alive=body.keep_alive_seconds
            )
            return {"embedding": result.vectors[0]}

        return _json(await run_in_threadpool(run))

    router.add_api_route(
        "/api/pull", pull_route(manager, invalid_body), methods=["POST"], response_model=None
    )

    @router.api_route("/api/delete", methods=["DELETE", "POST"], response_model=None)
    async def delete(request: Request) -> Response:
        body = await read_body(request, NamedBody, invalid_body)
        await run_in_threadpool(delete_model, manager, body.wanted)
        return Response(status_code=200)

    @router.post("/api/copy", response_model=None)
    async def copy(request: Request) -> Response:
        await copy_model(manager, request, invalid_body)
        return Response(status_code=200)

    @router.post("/api/create", response_model=None)
    async def create() -> Response:
        raise not_implemented(
            "Creating models", "shimmy serves GGUF files as they are: pull one with /api/pull"
        )

    @router.post("/api/push", response_model=None)
    async def push() -> Response:
        raise not_implemented("Pushing models", "shimmy only pulls, from Hugging Face")

    @router.api_route("/api/blobs/{digest}", methods=["HEAD", "POST"], response_model=None)
    async def blobs(digest: str) -> Response:
        raise not_implemented("Blobs", "shimmy does not create models from uploaded files")

    return router


# -- loading ------------------------------------------------------------------------


def _load(
    manager: ModelManager, name: str, keep_alive: float | None, timing: shapes.Timing
) -> ModelEntry:
    """The model ``name`` means, loaded (the wait measured into ``timing``)."""
    entry = names.resolve(manager, name)
    started = time.monotonic()
    manager.engine(entry.name, keep_alive=keep_alive)
    timing.load_seconds = time.monotonic() - started
    return entry


async def _load_or_unload(
    manager: ModelManager, body: ChatBody | GenerateBody, empty: dict[str, Any]
) -> Response:
    """Ollama's request without messages or prompt: load the model and keep it
    (``done_reason: load``), or with a keep-alive of 0 unload it (``unload``)."""
    keep_alive = body.keep_alive_seconds

    def run() -> str:
        entry = names.resolve(manager, body.model)
        if keep_alive == 0:
            manager.unload(entry.name)
            return "unload"
        manager.engine(entry.name, keep_alive=keep_alive)
        return "load"

    reason = await run_in_threadpool(run)
    return _json(
        {
            "model": body.model,
            "created_at": shapes.timestamp(),
            **empty,
            "done": True,
            "done_reason": reason,
        }
    )


# -- streams ----------------------------------------------------------------------


def _assistant(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


async def _chat_lines(
    generation: Generation, model: str, timing: shapes.Timing
) -> AsyncIterator[str]:
    """A line per piece of text, a line per finished tool call (its arguments
    whole, as Ollama sends calls), then the done line with the timings; an error
    mid-stream is the last line, in Ollama's error shape."""

    def line(message: dict[str, Any]) -> str:
        return ndjson_line(
            {"model": model, "created_at": shapes.timestamp(), "message": message, "done": False}
        )

    calls: list[ToolCall] = []
    pending: list[str] = []  # the id, name and argument text of the call being written

    def finished_call() -> str | None:
        if not pending:
            return None
        call = ToolCall(pending[0], pending[1], "".join(pending[2:]))
        pending.clear()
        calls.append(call)
        message = _assistant("")
        message["tool_calls"] = [shapes.tool_call(call, len(calls) - 1)]
        return line(message)

    try:
        async for event in reply_events(generation):
            if isinstance(event, CallArguments):
                pending.append(event.text)
                continue
            done = finished_call()
            if done is not None:
                yield done
            if isinstance(event, TextDelta):
                yield line(_assistant(event.text))
            elif isinstance(event, CallStarted):
                pending.extend((event.id, event.name))
        done = finished_call()
        if done is not None:
            yield done
        yield ndjson_line(
            {
                "model": model,
                "created_at": shapes.timestamp(),
                "message": _assistant(""),
                "done": True,
                "done_reason": shapes.done_reason(generation),
                **shapes.reply_metrics(generation, timing),
            }
        )
    except ShimmyError as exc:
        yield ndjson_line(error_line(exc))


async def _generate_lines(
    generation: Generation, model: str, timing: shapes.Timing
) -> AsyncIterator[str]:
    def line(text: str, **final: Any) -> str:
        return ndjson_line(
            {
                "model": model,
                "created_at": shapes.timestamp(),
                "response": text,
                "done": bool(final),
                **final,
            }
        )

    try:
        async for piece in generation.stream():
            if piece.text:
                yield line(piece.text)
        reason = shapes.done_reason(generation)
        yield line("", done_reason=reason, **shapes.reply_metrics(generation, timing))
    except ShimmyError as exc:
        yield ndjson_line(error_line(exc))


# -- models -------------------------------------------------------------------------


def _listed_models(manager: ModelManager) -> list[dict[str, Any]]:
    """Every usable model as ``NAME:latest`` (and every preset whose model is
    pulled on first use), and every alias under its own name."""
    entries = [e for e in manager.registry.entries() if e.offered]
    models = [shapes.listed(names.shown_name(e.name), e) for e in entries]
    taken = {e.name for e in entries}
    for alias in manager.registry.aliases.all():
        if alias.key in taken:
            continue  # a discovered model of that name wins (ModelRegistry.resolve)
        try:
            target = manager.registry.aliased(alias, entries)
        except ShimmyError:
            continue  # its file is gone: nothing to offer
        models.append(shapes.listed(names.shown_name(alias.name), target))
    return sorted(models, key=lambda m: str(m["name"]).lower())


def _show(manager: ModelManager, name: str) -> dict[str, Any]:
    entry = names.resolve(manager, name)
    if entry.pull is not None:
        # Nothing is known of it before the pull (no header, no template): no guesses.
        raise ShimmyError(
            "model_invalid",
            f"Model '{name}' is not on this machine yet",
            f"it is pulled from Hugging Face ({entry.pull}) when it is first used",
        )
    if not entry.usable:
        raise ShimmyError("model_invalid", f"Model '{name}' cannot be used", entry.error)
    info = entry.info
    license_text = info.metadata.get("general.license") if info else None
    return {
        "license": str(license_text or ""),
        "modelfile": f"# Served by shimmy from a GGUF file\nFROM {names.shown_name(entry.name)}\n",
        "parameters": shapes.parameters(entry, _context_of(manager, entry)),
        "template": (info.chat_template if info else None) or "",
        "details": shapes.details(entry),
        "model_info": shapes.model_info(entry),
        "capabilities": shapes.capabilities(entry),
        "modified_at": shapes.modified_at(entry),
    }


def _context_of(manager: ModelManager, entry: ModelEntry) -> int:
    """The context one request gets: the loaded engine's, else what loading it
    would give (--ctx-size, capped at the trained length)."""
    for model in manager.stats().loaded:
        if model.name == entry.name:
            return model.n_ctx
    trained = entry.context_length or manager.settings.ctx_size
    return min(manager.settings.ctx_size, trained)


def _running_models(manager: ModelManager) -> list[dict[str, Any]]:
    """/api/ps: the loaded models, the one to be unloaded last first (as Ollama)."""
    running = []
    for model in manager.stats().loaded:
        try:
            entry = manager.registry.resolve(model.name)
        except ShimmyError:
            continue  # unlisted since it loaded
        unloads_in = manager.unloads_in(model.name)
        shown = names.shown_name(model.name)
        running.append(
            {
                "name": shown,
                "model": shown,
                "size": model.memory_bytes,
                "digest": shapes.digest(entry),
                "details": shapes.details(entry),
                "expires_at": shapes.expires_at(unloads_in),
                "size_vram": 0,  # shimmy runs models on the CPU
                "context_length": model.n_ctx,
            }
        )
    return sorted(running, key=lambda m: m["expires_at"], reverse=True)


def _shortened(vector: list[float], dimensions: int) -> list[float]:
    """The first ``dimensions`` of ``vector``, normalized again (Ollama's
    ``dimensions``); 400 if the vector is shorter."""
    if dimensions > len(vector):
        raise ShimmyError(
            "invalid_request",
            f"dimensions must be at most {len(vector)}, the size of this model's embeddings",
        )
    cut = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in cut))
    return [x / norm for x in cut] if norm > 0 else cut


def _json(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse(data, media_type=JSON_MEDIA_TYPE)
