"""The shape of an error answer: which status and JSON body tell a client about a
:class:`~shimmy.errors.ShimmyError`, by the API its request's path belongs to.

Kept apart from :mod:`shimmy.api.errors` (FastAPI's handlers) and free of any web
framework, because the guards that refuse a request before it is routed (API
keys, browser origins, body size; :mod:`shimmy.api.refusal`) use it too, and the
dashboard imports those before its first frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Scope

from shimmy.errors import ShimmyError

ANTHROPIC_PATH = "/v1/messages"
ANTHROPIC_OVERLOADED = 529  # Anthropic's status for "overloaded", its SDKs' OverloadedError
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    ANTHROPIC_OVERLOADED: "overloaded_error",
}
ANTHROPIC_ERROR_TYPES = frozenset([*_ANTHROPIC_TYPES.values(), "api_error"])


def speaks_anthropic(path: str) -> bool:
    """Whether ``path`` is Anthropic's Messages API (its errors take its envelope)."""
    return path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + "/")


def anthropic_status(error: ShimmyError) -> int:
    """The status Anthropic answers ``error`` with: a busy server is "overloaded"."""
    return ANTHROPIC_OVERLOADED if error.code == "server_busy" else error.status


def anthropic_error(error: ShimmyError) -> dict[str, Any]:
    """``error`` in Anthropic's envelope (the body of an error answer, and the data
    of a stream's ``error`` event); the details go into the message, since the
    envelope has no field for them."""
    status = anthropic_status(error)
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    kind = _ANTHROPIC_TYPES.get(status, fallback)
    message = f"{error.message} ({error.details})" if error.details else error.message
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_body(path: str, error: ShimmyError) -> tuple[int, dict[str, Any]]:
    """The status and body that answer ``error`` for a request to ``path``."""
    if speaks_anthropic(path):
        return anthropic_status(error), anthropic_error(error)
    return error.status, error.to_dict()


ErrorBody = Callable[[Scope, ShimmyError], tuple[int, dict[str, Any]]]
"""The status and JSON body that tell a request's client about an error (they may
depend on the request's path: one listener serves several APIs)."""


def shimmy_error_body(scope: Scope, error: ShimmyError) -> tuple[int, dict[str, Any]]:
    """The main listener's: shimmy's own shape (SEED-API.md, with OpenAI's
    ``type``), Anthropic's envelope under its path."""
    return error_body(str(scope.get("path", "")), error)
