"""Errors as Ollama answers them: ``{"error": "..."}`` with its status (404 for an
unknown model, 400 for a bad request), which Ollama's clients read (the Python
client's ``ResponseError`` carries the text and the status). The /v1 dialects
served on the same listener keep their own shape.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from shimmy.api.error_shapes import shimmy_error_body
from shimmy.api.security import OPEN_PATHS
from shimmy.errors import ShimmyError

# What clients probe before anything else ("is Ollama there, which version"):
# answered without an API key, as /api/health is on the main listener. They
# say nothing about the models.
OLLAMA_OPEN_PATHS = OPEN_PATHS | {"/", "/api/version"}


def error_text(error: ShimmyError) -> str:
    """The one line Ollama's clients show: the message, and its details if any."""
    return f"{error.message} ({error.details})" if error.details else error.message


def error_line(error: ShimmyError) -> dict[str, str]:
    """Ollama's error body, also the last line of a stream that failed."""
    return {"error": error_text(error)}


def ollama_error_body(scope: Scope, error: ShimmyError) -> tuple[int, dict[str, Any]]:
    """Ollama's shape, except under /v1 (OpenAI's and the other /v1 dialects keep
    their own, as on the main listener)."""
    if str(scope.get("path", "")).startswith("/v1/"):
        return shimmy_error_body(scope, error)
    return error.status, error_line(error)


def not_implemented(what: str, instead: str) -> ShimmyError:
    """501 for the parts of Ollama's API that shimmy does not have."""
    return ShimmyError("invalid_request", f"{what} is not supported by shimmy", instead, status=501)
