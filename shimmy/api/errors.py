"""Every failure leaves the API in its error shape.

FastAPI's own 422 bodies, Starlette's 404/405 pages and unexpected exceptions
are all turned into ``{"error": {"code", "message", "details", "type"}}`` (the
shape of SEED-API.md, which OpenAI's clients read too) with the right status,
so no client ever sees a traceback or a framework default.

One dialect has an envelope of its own: Anthropic's Messages API (everything
under ``/v1/messages``) answers ``{"type": "error", "error": {"type",
"message"}}`` with Anthropic's statuses (529 for an overloaded server), which
its SDKs turn into their exceptions. :func:`shimmy.api.error_shapes.error_body`
picks the shape by path,
for the route handlers here and for the guards that refuse a request before it
is routed (API keys, body size, browser origins) alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shimmy.api.core.watch import ClientGone
from shimmy.api.error_shapes import (
    ANTHROPIC_ERROR_TYPES,
    ANTHROPIC_OVERLOADED,
    ErrorBody,
    shimmy_error_body,
    speaks_anthropic,
)
from shimmy.errors import ERROR_KINDS, ShimmyError

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499


def error_response(
    error: ShimmyError, request: Request | None = None, shape: ErrorBody = shimmy_error_body
) -> JSONResponse:
    """``error`` in ``shape`` (the main listener's by default) with its headers."""
    status, body = shape(request.scope if request is not None else {}, error)
    return JSONResponse(body, status_code=status, headers=error.headers)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One readable line for pydantic's error list, e.g. "max_tokens: Input should be a
    valid integer; prompt: Field required"."""
    parts = []
    for err in errors:
        location = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        if err.get("type") == "json_invalid":
            parts.append("body is not valid JSON")
            continue
        message = err.get("msg", "invalid")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"


def validation_error(errors: Sequence[Any]) -> ShimmyError:
    return ShimmyError(
        "invalid_request", "Request format is invalid", describe_validation_errors(errors)
    )


def install_error_handlers(app: FastAPI, shape: ErrorBody = shimmy_error_body) -> None:
    """Every failure answered in ``shape`` (shimmy's own error body by default)."""

    @app.exception_handler(ShimmyError)
    async def _shimmy(request: Request, exc: ShimmyError) -> JSONResponse:
        return error_response(exc, request, shape)

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> Response:
        # Nobody is there to read an answer; nginx's "client closed request"
        # tells the request log and /metrics what happened.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()), request, shape)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        # Keep Starlette's headers: a 405 must say which methods are allowed (Allow).
        error = ShimmyError(
            "invalid_request", message, status=exc.status_code, headers=dict(exc.headers or {})
        )
        return error_response(error, request, shape)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        error = ShimmyError("server_error", "Internal server error", type(exc).__name__)
        return error_response(error, request, shape)


ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details", "type"],
            "properties": {
                "code": {"type": "string", "enum": sorted(ERROR_KINDS)},
                "message": {"type": "string"},
                "details": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "type": {"type": "string"},
            },
        }
    },
}

ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "title": "AnthropicErrorResponse",
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "enum": sorted(ANTHROPIC_ERROR_TYPES)},
                "message": {"type": "string"},
            },
        },
    },
}

_DOCUMENTED_ERRORS = {
    "400": "Invalid request: malformed JSON, wrong types, a prompt longer than the context",
    "401": "Missing or wrong API key (when keys are configured)",
    "404": "Unknown model",
    "413": "Request body too large",
    "500": "Generation or server failure",
    "503": "Server busy: the queue is full (see Retry-After)",
}
# Anthropic's paths answer a full queue with its "overloaded" status instead.
_ANTHROPIC_DOCUMENTED_ERRORS = {
    **{k: v for k, v in _DOCUMENTED_ERRORS.items() if k != "503"},
    str(ANTHROPIC_OVERLOADED): "Overloaded: the queue is full (see Retry-After)",
}


def document_errors(app: FastAPI) -> None:
    """Describe every error an operation can return, in its error shape (Anthropic's
    under its paths, shimmy's elsewhere), instead of FastAPI's 422 validation body
    (which shimmy never sends)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorResponse"] = ERROR_SCHEMA
        components["AnthropicErrorResponse"] = ANTHROPIC_ERROR_SCHEMA
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for name, path in schema.get("paths", {}).items():
            anthropic = speaks_anthropic(name)
            shape = "AnthropicErrorResponse" if anthropic else "ErrorResponse"
            content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}}
            errors = _ANTHROPIC_DOCUMENTED_ERRORS if anthropic else _DOCUMENTED_ERRORS
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status, description in errors.items():
                    responses.setdefault(status, {"description": description, "content": content})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
