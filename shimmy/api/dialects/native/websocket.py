"""The native WebSocket API of SEED-API.md: ``/ws/generate``.

A connection serves one request frame after another: token frames, then
``{"done": true, ...}``; errors as error frames, and the connection goes on.
While a request is prepared or generated, the next frame (or the disconnect) is
its :class:`~shimmy.api.core.watch.Watch`: a disconnect or ``{"cancel": true}``
stops a chat template's render; any frame sent mid-generation stops the
generation. A frame that arrives while a request fails to prepare is served
next instead of lost.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.types import Message

from shimmy.api.core import ClientGone, Watch
from shimmy.api.core.watch import wait_until_finished
from shimmy.api.dialects.native.generate import submit_generate, usage
from shimmy.api.dialects.native.schemas import GenerateBody
from shimmy.api.errors import validation_error
from shimmy.api.security import cache_scope
from shimmy.errors import ShimmyError
from shimmy.models.generation import FINISH_ERROR, Generation
from shimmy.models.manager import DEFAULT_ALIAS, ModelManager

CANCELLED = ShimmyError("generation_failed", "The request was cancelled before it started")


def serve_websocket(router: APIRouter, manager: ModelManager) -> None:
    """Add ``/ws/generate`` to ``router``."""
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
                pending = await _serve_frame(manager, websocket, _frame_text(message))
        except WebSocketDisconnect:
            return
        finally:
            open_sockets -= 1


async def _serve_frame(manager: ModelManager, websocket: WebSocket, raw: str) -> Message | None:
    """One request frame; returns a frame that arrived while it failed to prepare."""
    try:
        body = _frame_body(raw)
    except ShimmyError as exc:
        await websocket.send_json(exc.to_dict())
        return None
    scope = cache_scope(websocket.scope)  # each API key's prompts cached apart
    watch = Watch(websocket.receive(), stops_render=_stops_preparing)
    try:
        try:
            generation = await watch.submit(
                lambda cancel: submit_generate(manager, body, "ws", cancel, scope)
            )
        except ClientGone:
            _raise_if_disconnected(watch)
            await websocket.send_json(CANCELLED.to_dict())
            return None
        except ShimmyError as exc:
            _raise_if_disconnected(watch)
            await websocket.send_json(exc.to_dict())
            return watch.message  # the next request, if one came meanwhile
        await _send_generation(websocket, generation, watch)
        return None
    finally:
        watch.close()


async def _send_generation(websocket: WebSocket, generation: Generation, watch: Watch) -> None:
    async def send_tokens() -> None:
        async for piece in generation.stream():
            if piece.text:
                await websocket.send_json({"token": piece.text})

    try:
        await watch.run(send_tokens(), [generation])
    except ClientGone:
        # Any frame sent mid-generation (e.g. {"cancel": true}) stopped it; the
        # answer still ends with its done frame.
        _raise_if_disconnected(watch)
        await wait_until_finished([generation])
    except ShimmyError as exc:
        await websocket.send_json(exc.to_dict())
        return
    if generation.finish_reason == FINISH_ERROR and generation.error is not None:
        await websocket.send_json(generation.error.to_dict())
        return
    await websocket.send_json(
        {"done": True, "finish_reason": generation.finish_reason, "usage": usage(generation)}
    )


def _raise_if_disconnected(watch: Watch) -> None:
    message = watch.message
    if message is not None and message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))


def _frame_text(message: Message) -> str:
    """A frame's text; a binary frame may carry UTF-8 JSON too."""
    text = message.get("text")
    if text is None:
        text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
    return str(text)


def _stops_preparing(message: Message) -> bool:
    """A disconnect, or a ``{"cancel": true}`` frame."""
    if message["type"] == "websocket.disconnect":
        return True
    text = _frame_text(message)
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
