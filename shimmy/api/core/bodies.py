"""Reading a request body into a dialect's typed request.

The body is JSON whatever its Content-Type: `curl -d` sends form encoding by
default, and a local server should not make people fight that (the browser
guard has already refused the cross-site "simple" requests that this would
otherwise let through). Each dialect says how a body that does not validate
is reported, since each API words its errors its own way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from shimmy.errors import ShimmyError

BodyT = TypeVar("BodyT", bound=BaseModel)

InvalidBody = Callable[[ValidationError, bytes], ShimmyError]
"""Turns pydantic's errors for a body (and the raw bytes) into the dialect's error."""


async def read_body(request: Request, model: type[BodyT], invalid: InvalidBody) -> BodyT:
    """The request's body validated as ``model``; ``invalid(...)`` raised if it is not."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid(exc, raw) from None
