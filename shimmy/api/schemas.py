"""Request bodies of the native API (SEED-API.md), validated strictly.

Strict mode: a string where a number belongs is an ``invalid_request``, not a
silent coercion. Fields beyond the seed's are optional and documented in
README.md; the seed's defaults are kept exactly.
"""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shimmy.models.generation import SamplingParams


class GenerateBody(BaseModel):
    """``POST /api/generate`` and the frames of ``/ws/generate``."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(default=100, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    stream: bool = False
    # Beyond the seed: the rest of the engine's sampling parameters.
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.1, gt=0.0)
    seed: int | None = None
    stop: list[str] | str | None = None
    # Send the prompt as it is, without the model's chat template.
    raw: bool = False

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_stop(value)

    def sampling(self) -> SamplingParams:
        return sampling_of(self)

    def stop_strings(self) -> tuple[str, ...]:
        return stop_strings(self.stop)


# Every stop string is looked for after every token, so a request may not ask for
# thousands of them (80,000 slowed every request on the engine).
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 500


def check_stop(value: str | list[str] | None) -> str | list[str] | None:
    """A request's ``stop`` within the bounds, else a ValueError that names them."""
    stops = [value] if isinstance(value, str) else value or []
    if len(stops) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences are allowed")
    if any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise ValueError(f"a stop sequence may be at most {MAX_STOP_LENGTH} characters")
    return value


SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))


def sampling_of(body: BaseModel) -> SamplingParams:
    """The engine's sampling parameters from those a request body has (the
    native body has no penalties but repeat_penalty; the OpenAI ones have all)."""
    fields = type(body).model_fields
    return SamplingParams(
        **{name: getattr(body, name) for name in SAMPLING_FIELDS if name in fields}
    )


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """A request's ``stop`` (absent, one string or a list) as a tuple, empties dropped."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    return tuple(s for s in stop if s)
