"""Every failure leaves the API in the error shape of SEED-API.md.

FastAPI's own 422 bodies, Starlette's 404/405 pages and unexpected exceptions
are all turned into ``{"error": {"code", "message", "details", "type"}}`` with
the right status, so no client ever sees a traceback or a framework default.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shimmy.errors import ShimmyError

log = logging.getLogger(__name__)


def error_response(error: ShimmyError) -> JSONResponse:
    return JSONResponse(error.to_dict(), status_code=error.status, headers=error.headers)


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ShimmyError)
    async def _shimmy(_: Request, exc: ShimmyError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        error = ShimmyError("invalid_request", message, status=exc.status_code)
        return error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(
            ShimmyError("server_error", "Internal server error", type(exc).__name__)
        )
