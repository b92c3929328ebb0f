"""One error type for every failure shimmy reports.

A :class:`ShimmyError` carries a stable machine-readable ``code`` (the codes of
SEED-API.md plus a few in the same style), a human ``message``, optional
``details``, and knows its HTTP status and CLI exit code, so the API, the CLI
and the dashboard all report the same failure the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Exit codes of the ``shimmy`` command (documented in README.md)."""

    OK = 0
    FAILURE = 1  # server_error and anything unexpected
    USAGE = 2  # bad flags or arguments (argparse uses 2 as well)
    MODEL_NOT_FOUND = 3
    MODEL_INVALID = 4
    GENERATION_FAILED = 5
    SERVER_BUSY = 6
    UNAUTHORIZED = 7
    DOWNLOAD_FAILED = 8
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


@dataclass(frozen=True)
class ErrorKind:
    """How one error code maps onto HTTP, OpenAI's error ``type`` and exit codes."""

    status: int
    openai_type: str
    exit_code: ExitCode


ERROR_KINDS: dict[str, ErrorKind] = {
    # The four codes of SEED-API.md.
    "model_not_found": ErrorKind(404, "not_found_error", ExitCode.MODEL_NOT_FOUND),
    "invalid_request": ErrorKind(400, "invalid_request_error", ExitCode.USAGE),
    "generation_failed": ErrorKind(500, "server_error", ExitCode.GENERATION_FAILED),
    "server_error": ErrorKind(500, "server_error", ExitCode.FAILURE),
    # Codes added in the same style (DESIGN.md, "Errors").
    "model_invalid": ErrorKind(400, "invalid_request_error", ExitCode.MODEL_INVALID),
    "model_load_failed": ErrorKind(500, "server_error", ExitCode.MODEL_INVALID),
    "request_too_large": ErrorKind(413, "invalid_request_error", ExitCode.USAGE),
    "server_busy": ErrorKind(503, "server_error", ExitCode.SERVER_BUSY),
    "unauthorized": ErrorKind(401, "authentication_error", ExitCode.UNAUTHORIZED),
    # A web page's origin or a rebound Host name (shimmy/api/browser.py).
    "forbidden": ErrorKind(403, "permission_error", ExitCode.UNAUTHORIZED),
    "download_failed": ErrorKind(502, "server_error", ExitCode.DOWNLOAD_FAILED),
}


class ShimmyError(Exception):
    """A failure with a code from :data:`ERROR_KINDS`, safe to show to a user."""

    def __init__(
        self,
        code: str,
        message: str,
        details: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if code not in ERROR_KINDS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.kind = ERROR_KINDS[code]
        self.status = status if status is not None else self.kind.status
        self.headers = headers or {}

    @property
    def exit_code(self) -> int:
        return int(self.kind.exit_code)

    def to_dict(self) -> dict[str, Any]:
        """The error body of SEED-API.md, plus OpenAI's ``type`` field."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "type": self.kind.openai_type,
            }
        }

    def one_line(self) -> str:
        """The single stderr line the CLI prints for this error."""
        text = f"error: {self.message}"
        if self.details:
            text += f" ({self.details})"
        return text

    def __repr__(self) -> str:
        return f"ShimmyError({self.code!r}, {self.message!r}, {self.details!r})"


def model_not_found(name: str) -> ShimmyError:
    return ShimmyError(
        "model_not_found",
        "The specified model was not found",
        f"Model '{name}' is not available",
    )
