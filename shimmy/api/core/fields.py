"""Request fields that every dialect has: sampling settings and stop strings."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel

from shimmy.models.generation import SamplingParams

# Every stop string is looked for after every token, so a request may not ask for
# thousands of them (80,000 slowed every request on the engine).
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 500


def check_stop(value: str | list[str] | None) -> str | list[str] | None:
    """A request's ``stop`` within the bounds, else a ValueError that names them
    (raised inside a pydantic validator, it becomes the dialect's 400)."""
    stops = [value] if isinstance(value, str) else value or []
    if len(stops) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences are allowed")
    if any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise ValueError(f"a stop sequence may be at most {MAX_STOP_LENGTH} characters")
    return value


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """A request's ``stop`` (absent, one string or a list) as a tuple, empties dropped."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    return tuple(s for s in stop if s)


SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))


def sampling_of(body: BaseModel) -> SamplingParams:
    """The engine's sampling parameters from those a request body has, by name
    (a body without a field leaves the engine's default)."""
    fields = type(body).model_fields
    return SamplingParams(
        **{name: getattr(body, name) for name in SAMPLING_FIELDS if name in fields}
    )
